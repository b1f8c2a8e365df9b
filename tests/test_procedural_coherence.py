"""Issue 12, the procedural writer: a script agrees with itself, over many seeds and every built-in theme.

QA that is true by construction must agree with every other field: a character's name, lookalike (gender noun, age,
feature), description and every pronoun about them tell one person; the overview, the QA, the dialogue and the shots
name one central object, the one the theme names when it names one.
"""

from __future__ import annotations

import re

import pytest

from moviellm_data.writers import MovieRequest, ProceduralWriter
from moviellm_data.writers import grammar
from moviellm_data.writers.procedural import object_named_by

GENDER_OF_NAME = {name: gender for gender, names in grammar.NAMES_BY_GENDER.items() for name in names}
GENDER_OF_NOUN = {"woman": "female", "girl": "female", "man": "male", "boy": "male"}
PRONOUN_GENDER = {"he": "male", "him": "male", "his": "male", "himself": "male",
                  "she": "female", "her": "female", "hers": "female", "herself": "female"}
ALL_OBJECTS = sorted({o for g in grammar.GENRES.values() for o in g.objects})
LOOKALIKE = re.compile(r"^an? (?P<age>teenage|young|middle-aged|elderly) (?P<noun>man|woman|boy|girl) with (?P<feature>.+)$")


def _phrase(obj: str) -> str:
    return re.sub(r"^(a|an|the)\s+", "", obj.lower())


def _scripts():
    writer = ProceduralWriter("3x2x4")
    themes = [*grammar.DEFAULT_THEMES, "an untitled story"]
    for seed in range(12):
        for index, theme in enumerate(themes):
            yield writer.write(MovieRequest(id=f"m{index:06d}_c", index=index, theme=theme, seed=seed))


SCRIPTS = list(_scripts())  # 12 seeds x 27 themes = 324 movies, about a second


def _texts(script, descriptions: bool = True) -> list[str]:
    """Every sentence-like text of a script a reader sees (a character's description is about that character)."""
    texts = [script.title, script.overview, *(c.description for c in script.characters if descriptions)]
    for act in script.acts:
        texts += [act.title, act.summary]
        for scene in act.scenes:
            texts += [scene.title, scene.summary]
            for shot in scene.shots:
                texts += [shot.prompt, shot.action, *([shot.dialogue.text] if shot.dialogue else [])]
    for qa in script.qa:
        texts += [qa.question, qa.answer]
    return texts


def test_the_scripts_cover_every_genre():
    assert {s.genre for s in SCRIPTS} == set(grammar.GENRES)


def test_name_gender_age_and_feature_agree_for_every_character():
    for script in SCRIPTS:
        for c in script.characters:
            look = LOOKALIKE.match(c.lookalike)
            assert look, c.lookalike
            gender = GENDER_OF_NAME[c.name]
            assert GENDER_OF_NOUN[look["noun"]] == gender, (script.id, c.name, c.lookalike)
            assert (look["noun"] in ("boy", "girl")) == (look["age"] == "teenage"), c.lookalike
            assert look["feature"] in grammar.features_for(gender, look["age"]), c.lookalike
            assert "beard" not in look["feature"] or (gender == "male" and look["age"] != "teenage"), c.lookalike
            assert "grey" not in look["feature"] or look["age"] in ("middle-aged", "elderly"), c.lookalike
            pronouns = {PRONOUN_GENDER[w] for w in re.findall(r"[a-z]+", c.description) if w in PRONOUN_GENDER}
            assert pronouns == {gender}, (c.name, c.description)
        assert len({c.name for c in script.characters}) == len(script.characters)
        assert len({c.lookalike for c in script.characters}) == len(script.characters)


def test_every_pronoun_agrees_with_the_character_its_sentence_names():
    checked = 0
    for script in SCRIPTS:
        genders = {c.name: GENDER_OF_NAME[c.name] for c in script.characters}
        for text in _texts(script, descriptions=False):
            for sentence in re.split(r"(?<=[.!?;])\s+", text):
                said = {PRONOUN_GENDER[w] for w in re.findall(r"[a-z]+", sentence.lower()) if w in PRONOUN_GENDER}
                if not said:
                    continue
                named = {genders[n] for n in genders if re.search(rf"\b{n}\b", sentence)}
                if len([n for n in genders if re.search(rf"\b{n}\b", sentence)]) == 1:
                    assert said == named, (script.id, sentence)
                    checked += 1
                else:  # a pronoun's sentence names whom it is about
                    assert said <= named, (script.id, sentence)
    assert checked > 100  # the templates do use pronouns


def test_the_qa_describes_the_rival_as_the_cast_list_does():
    for script in SCRIPTS:
        for qa in script.qa:
            if qa.question.startswith("Who stands in"):
                name = qa.answer.split(",", 1)[0]
                character = script.character(name)
                assert qa.answer == f"{name}, {character.visual_description()}." and character.role == "supporting"


def test_overview_qa_dialogue_and_shots_name_one_central_object():
    themed = 0
    for script in SCRIPTS:
        centre = next(qa for qa in script.qa if qa.question == "Which object is at the centre of the story?")
        central = centre.answer.rstrip(".")
        assert _phrase(central) in script.overview.lower(), (script.id, central, script.overview)
        named_by_theme = object_named_by(script.theme)
        if named_by_theme is not None:
            themed += 1
            assert _phrase(named_by_theme) == _phrase(central), (script.theme, central)
        others = [o for o in ALL_OBJECTS if _phrase(o) != _phrase(central)]
        for text in _texts(script):
            for other in others:
                assert _phrase(other) not in text.lower(), (script.id, central, other, text)
        genre_heads = {o.split()[-1] for o in grammar.GENRES[script.genre].objects} - {central.split()[-1]}
        spoken = [s.dialogue.text for a in script.acts for sc in a.scenes for s in sc.shots if s.dialogue]
        for text in [*spoken, *(qa.answer for qa in script.qa if qa.type == "plot")]:  # the goal, the lines
            for head in genre_heads:
                assert not re.search(rf"\b{head}s?\b", text.lower()), (script.id, central, head, text)
        for shot in (s for a in script.acts for sc in a.scenes for s in sc.shots):
            for obj in ALL_OBJECTS:
                if _phrase(obj) in shot.prompt.lower():
                    assert _phrase(obj) == _phrase(central), (shot.prompt, central)
    assert themed >= 12 * 2  # "a dragon's egg" and "a missing painting" name their objects


@pytest.mark.parametrize("theme", ["a dragon's egg", "a missing painting"])
def test_a_theme_that_names_an_object_makes_it_central(theme):
    for seed in range(30):
        script = ProceduralWriter("tiny").write(MovieRequest(id="m000000_t", index=0, theme=theme, seed=seed))
        centre = next(qa for qa in script.qa if qa.question == "Which object is at the centre of the story?")
        assert _phrase(centre.answer.rstrip(".")) == _phrase(theme)
