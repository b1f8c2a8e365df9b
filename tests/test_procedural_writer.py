"""The offline writer: deterministic, sized, varied, and its QA true by construction."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest

from moviellm_data.errors import ConfigError
from moviellm_data.script import QA_TYPES
from moviellm_data.sizes import SIZE_PRESETS, StorySize, parse_size
from moviellm_data.writers import MovieRequest, ProceduralWriter
from moviellm_data.writers.grammar import GENRE_WEIGHTS, GENRES
from moviellm_data.writers.procedural import infer_genre


# Words every movie uses because the reference's prompt form and verb set require them.
GRAMMAR_WORDS = {"standing", "sitting", "squatting", "looking", "holding", "walking", "talking", "hugging",
                 "through", "beside", "while", "looks", "told", "movie", "dreams", "story", "about", "with",
                 "that", "this", "what", "your", "have", "there", "then", "from", "into", "over"}


def write(theme="a love story", seed=1, size="tiny", index=0):
    return ProceduralWriter(size).write(MovieRequest(id=f"m{index:06d}_t", index=index, theme=theme, seed=seed))


def test_same_theme_and_seed_give_the_same_script():
    assert write(seed=5).to_json() == write(seed=5).to_json()
    assert write(seed=5).to_json() != write(seed=6).to_json()
    assert write(theme="a bank heist", seed=5).to_json() != write(seed=5).to_json()


@pytest.mark.parametrize(("size", "frames"), [("tiny", 12), ("small", 45), ("reference", 1331), ("4x1x2", 8)])
def test_sizes(size, frames):
    script = write(size=size)
    expected = parse_size(size)
    assert script.num_frames == frames
    assert len(script.acts) == expected.acts
    assert all(len(act.scenes) == expected.scenes_per_act for act in script.acts)
    assert all(len(sc.shots) == expected.shots_per_scene for act in script.acts for sc in act.scenes)


def test_size_presets_and_bad_sizes():
    assert SIZE_PRESETS["reference"] == StorySize(11, 11, 11)
    with pytest.raises(ConfigError, match="unknown movie size 'huge'"):
        parse_size("huge")
    with pytest.raises(ConfigError, match="positive"):
        parse_size("0x2x2")


def test_all_fifteen_genres_are_written():
    assert len(GENRES) == 15 and set(GENRES) == set(GENRE_WEIGHTS)
    seen = Counter(write(theme="an untitled story", seed=s).genre for s in range(400))
    assert set(seen) == set(GENRES)
    # The unhinted mix follows the paper's shares: drama is the most common genre.
    assert seen.most_common(1)[0][0] == "drama"


def test_theme_words_choose_the_genre():
    assert infer_genre("a haunted lighthouse") == "horror"
    assert infer_genre("a love story") == "romance"
    assert infer_genre("an astronaut alone in space") == "sci-fi"
    assert infer_genre("a walk") is None
    assert write(theme="a dragon's egg").genre == "fantasy"


def test_cast_locations_and_style_follow_the_reference_rules():
    for seed in range(20):
        script = write(seed=seed, size="small")
        roles = Counter(c.role for c in script.characters)
        assert 1 <= roles["main"] <= 2 and roles["supporting"] >= 1
        assert len({c.outfit_colour for c in script.characters}) == len(script.characters)
        assert all(c.lookalike.split()[0] in ("a", "an") and c.lookalike.split()[2] in ("man", "woman", "boy", "girl")
                   for c in script.characters)
        assert len(script.locations) >= 12
        assert all(len(loc.split()) <= 2 for loc in script.locations)
        assert script.style.keyword.isalpha() or "-" in script.style.keyword
        assert set(script.style.emphasised) <= set(script.style.phrases)


def test_shot_prompts_have_the_strict_form():
    script = write(size="small")
    for shot in script.shots():
        assert shot.prompt.startswith(f"at the {shot.location}, ")
        assert " is " in shot.prompt and shot.prompt.endswith(shot.expression)
        assert shot.characters and all(name in shot.prompt for name in shot.characters)


def test_about_half_the_shots_speak_and_speakers_are_in_the_shot():
    script = write(size="reference", theme="a detective story")
    shots = script.shots()
    spoken = [s for s in shots if s.dialogue]
    assert 0.4 < len(spoken) / len(shots) < 0.6
    for shot in spoken:
        assert shot.dialogue.speaker in shot.characters
        # Nobody addresses themselves by name.
        assert not shot.dialogue.text.rstrip(".!?").endswith(f", {shot.dialogue.speaker}")


def test_qa_covers_every_type_with_valid_evidence():
    script = write(size="small")
    kinds = Counter(q.type for q in script.qa)
    assert set(kinds) == set(QA_TYPES)
    assert kinds["act"] == 3 and kinds["scene"] == 9 and kinds["shot"] == 9 and kinds["plot"] >= 2


def test_qa_answers_are_true_of_the_frames_they_cite():
    for seed in range(10):
        script = write(seed=seed, size="small")
        shots = script.shots()
        scenes = [sc for act in script.acts for sc in act.scenes]
        for qa in script.qa:
            cited = shots[qa.evidence.start : qa.evidence.end + 1]
            if qa.type == "shot":
                assert qa.evidence.start == qa.evidence.end
                shot = cited[0]
                if "says" in qa.question:
                    assert shot.dialogue and shot.dialogue.text in qa.question
                    assert shot.action[1:] in qa.answer
                else:
                    name = qa.question.removeprefix("What colour is ").split(" wearing")[0]
                    assert name in shot.characters
                    assert qa.answer.lower().startswith(script.character(name).outfit_colour)
            elif qa.type == "scene" and qa.question.startswith("Where"):
                assert all(s.location in qa.answer for s in cited)
            elif qa.type == "scene":
                present = {n for s in cited for n in s.characters}
                assert all(name in qa.answer for name in present)
            elif qa.type == "act" and qa.question.startswith("Where"):
                assert all(f"the {s.location}" in qa.answer for s in cited)
            elif qa.type == "temporal" and qa.question.startswith("Which happens first"):
                early = qa.answer.split('"')[1]
                titles = [sc.title for sc in scenes]
                assert early in titles
            elif qa.type == "plot" and qa.question.startswith("Who stands"):
                rival = qa.answer.split(",")[0]
                assert rival in cited[0].characters and rival in cited[-1].characters


def test_movies_read_differently_not_as_one_template():
    scripts = [write(theme=t, seed=s, size="small") for s, t in enumerate(
        ["a love story", "a bank heist", "a haunted lighthouse", "a treasure hunt", "a family reunion",
         "a robot learning to paint", "a city flood", "a wartime letter", "a magic library", "a boxer's last fight"])]
    assert len({s.title for s in scripts}) == len(scripts)
    assert len({s.genre for s in scripts}) >= 8
    # Arcs differ: the sequence of act titles is never shared.
    assert len({tuple(a.title for a in s.acts) for s in scripts}) == len(scripts)

    def words(script):
        """Content words of everything the movie shows and says, without the shared grammar words."""
        text = " ".join([script.overview] + [s.prompt + " " + (s.dialogue.text if s.dialogue else "") for s in script.shots()])
        names = {c.name.lower() for c in script.characters}
        tokens = {w.strip(".,!?'\"").lower() for w in text.split()}
        return {w for w in tokens if len(w) > 3 and w not in names and w not in GRAMMAR_WORDS}

    for a, b in itertools.combinations(scripts, 2):
        wa, wb = words(a), words(b)
        assert len(wa & wb) / len(wa | wb) < 0.5, (a.title, b.title)
