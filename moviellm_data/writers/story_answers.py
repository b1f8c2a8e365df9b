"""What the LLM must answer at each level of story expansion, and the checks beyond the schema.

The answer models are built per request: counts become ``minItems``/``maxItems`` and the names an
answer may use (the outline's locations and cast) become ``enum`` values, so an endpoint with
structured outputs cannot even produce a shot in an unknown place. The ``*_problems`` functions then
check what a JSON schema cannot express (unique names, the strict image-prompt form, a speaker who
is in the frame, ...) and return sentences that a repair round shows to the model.

Levels (after the MovieLLM reference): outline -> scenes of one act -> shots of one scene, then
questions over the whole movie.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from ..script import Style
from .grammar import GENRE_WEIGHTS

GENRES: tuple[str, ...] = tuple(GENRE_WEIGHTS)
# What a character may be doing in a keyframe: the reference's small, drawable verb set plus a few.
VERBS: tuple[str, ...] = (
    "standing", "sitting", "looking", "talking", "holding", "squatting", "walking", "hugging",
    "reading", "writing", "running", "kneeling", "lying", "pointing", "waving", "opening", "carrying",
)
QUESTION_WORDS = ("what", "why", "how", "where")
PLOT_QUESTIONS = 2
SCENE_QUESTIONS = 2


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _text(max_chars: int) -> Any:
    """A string of at most ``max_chars`` characters: every field an answer has is bounded, so a broken or hostile
    endpoint cannot make one movie's prompts (which quote earlier answers) grow without end."""
    return Annotated[str, Field(max_length=max_chars)]


#: The longest text each kind of field may hold, in characters (a title is a few words, an overview a paragraph).
TEXT_LIMITS = {"name": 40, "word": 40, "title": 120, "place": 60, "phrase": 80, "lookalike": 200, "description": 300,
               "summary": 600, "overview": 1500, "prompt": 300, "expression": 60, "line": 240, "question": 300,
               "answer": 800}
Name, Word, Title, Place, Phrase = (_text(TEXT_LIMITS[k]) for k in ("name", "word", "title", "place", "phrase"))
Lookalike, Description, Summary = (_text(TEXT_LIMITS[k]) for k in ("lookalike", "description", "summary"))
Overview, Prompt, Expression, Line = (_text(TEXT_LIMITS[k]) for k in ("overview", "prompt", "expression", "line"))
Question, Answer = _text(TEXT_LIMITS["question"]), _text(TEXT_LIMITS["answer"])


class QAPair(_Strict):
    question: Question
    answer: Answer


class StyleAnswer(_Strict):
    keyword: Word
    phrases: list[Phrase] = Field(min_length=3, max_length=8)
    emphasised: list[Phrase] = Field(min_length=1, max_length=3)


class CharacterAnswer(_Strict):
    name: Name
    role: Literal["main", "supporting"]
    lookalike: Lookalike
    outfit_colour: Word
    description: Description


class ActPlan(_Strict):
    title: Title
    locations: list[Place] = Field(min_length=1, max_length=3)
    summary: Summary
    qa: QAPair


class MovieQAAnswer(_Strict):
    overview: QAPair
    plot: list[QAPair] = Field(min_length=PLOT_QUESTIONS, max_length=PLOT_QUESTIONS)
    temporal: QAPair


def _literal(values: tuple[str, ...]) -> Any:
    return Literal[values]  # type: ignore[valid-type]


@lru_cache(maxsize=256)
def outline_model(acts: int, locations: int) -> type[BaseModel]:
    """Level 1: title, genre, overview, style, ``locations`` places, 1-3 characters, ``acts`` acts."""
    return create_model(
        "MovieOutline",
        __base__=_Strict,
        title=(Title, ...),
        genre=(_literal(GENRES), ...),
        overview=(Overview, ...),
        style=(StyleAnswer, ...),
        locations=(list[Place], Field(min_length=locations, max_length=locations)),
        characters=(list[CharacterAnswer], Field(min_length=1, max_length=3)),
        acts=(list[ActPlan], Field(min_length=acts, max_length=acts)),
    )


@lru_cache(maxsize=1024)
def scenes_model(scenes: int, act_locations: tuple[str, ...]) -> type[BaseModel]:
    """Level 2: ``scenes`` scenes of one act, each at one of the act's locations, and one QA pair."""
    scene = create_model(
        "ScenePlan", __base__=_Strict, title=(Title, ...), location=(_literal(act_locations), ...), summary=(Summary, ...)
    )
    return create_model(
        "ActScenes",
        __base__=_Strict,
        scenes=(list[scene], Field(min_length=scenes, max_length=scenes)),
        qa=(QAPair, ...),
    )


@lru_cache(maxsize=1024)
def shots_model(shots: int, dialogue: int, locations: tuple[str, ...], names: tuple[str, ...]) -> type[BaseModel]:
    """Level 3: ``shots`` keyframes in known places with known characters, ``dialogue`` lines, 2 QA pairs."""
    keyframe = create_model(
        "Keyframe",
        __base__=_Strict,
        prompt=(Prompt, ...),
        location=(_literal(locations), ...),
        characters=(list[_literal(names)], Field(max_length=len(names))),
        expression=(Expression, ...),
    )
    line = create_model(
        "Line",
        __base__=_Strict,
        shot=(int, Field(ge=1, le=shots)),
        speaker=(_literal(names), ...),
        text=(Line, ...),
    )
    return create_model(
        "SceneShots",
        __base__=_Strict,
        shots=(list[keyframe], Field(min_length=shots, max_length=shots)),
        dialogue=(list[line], Field(min_length=dialogue, max_length=dialogue)),
        qa=(list[QAPair], Field(min_length=SCENE_QUESTIONS, max_length=SCENE_QUESTIONS)),
    )


# ------------------------------------------------------------------------------------------- checks


def _blank(value: object, where: str) -> list[str]:
    """Empty strings anywhere inside an answer."""
    if isinstance(value, BaseModel):
        return [p for name in type(value).model_fields for p in _blank(getattr(value, name), f"{where}.{name}".lstrip("."))]
    if isinstance(value, list):
        return [p for i, item in enumerate(value) for p in _blank(item, f"{where}.{i}")]
    if isinstance(value, str) and not value.strip():
        return [f"{where}: must not be empty"]
    return []


def _qa_problems(qa: QAPair, where: str) -> list[str]:
    """A what/why/how/where question ending with '?' (overview and temporal questions may be requests)."""
    problems = []
    if not qa.question.strip().endswith("?"):
        problems.append(f"{where}.question: must be a question ending with '?'")
    first = qa.question.strip().split(" ", 1)[0].lower()
    if first not in QUESTION_WORDS:
        problems.append(f"{where}.question: must start with What, Why, How or Where, not {first!r}")
    return problems


def strip_article(text: str) -> str:
    return re.sub(r"^(the|a|an)\s+", "", text.strip(), flags=re.IGNORECASE)


def outline_problems(outline: Any) -> list[str]:
    """What is wrong with a level-1 answer beyond its schema (an empty list when nothing is)."""
    problems = _blank(outline, "")
    try:
        Style(keyword=outline.style.keyword, phrases=outline.style.phrases, emphasised=outline.style.emphasised)
    except ValidationError as err:
        problems += [f"style: {e['msg'].removeprefix('Value error, ')}" for e in err.errors()]
    names = [c.name for c in outline.characters]
    for i, c in enumerate(outline.characters):
        if not re.fullmatch(r"[A-Z][A-Za-z'-]*( [A-Z][A-Za-z'-]*)?", c.name.strip()):
            problems.append(f"characters.{i}.name: {c.name!r} must be one or two capitalised words without punctuation")
        if not re.fullmatch(r"[A-Za-z]+", c.outfit_colour.strip()):
            problems.append(f"characters.{i}.outfit_colour: {c.outfit_colour!r} must be one colour word")
        if not re.match(r"(a|an)\s", c.lookalike.strip(), flags=re.IGNORECASE):
            problems.append(f"characters.{i}.lookalike: must start with 'a man', 'a woman' or similar")
        if c.name and c.name.lower() in c.lookalike.lower():
            problems.append(f"characters.{i}.lookalike: must describe the looks without the name {c.name!r}")
    if len({n.lower() for n in names}) != len(names):
        problems.append("characters: every character needs a different name")
    colours = [c.outfit_colour.lower() for c in outline.characters]
    if len(set(colours)) != len(colours):
        problems.append("characters: every character needs a different outfit_colour")
    mains = sum(c.role == "main" for c in outline.characters)
    if not 1 <= mains <= 2:
        problems.append(f"characters: there must be 1 or 2 main characters, not {mains}")
    if len(outline.characters) - mains > 1:
        problems.append("characters: there may be at most 1 supporting character")
    seen: set[str] = set()
    for i, place in enumerate(outline.locations):
        if place.strip().lower() in seen:
            problems.append(f"locations.{i}: {place!r} appears twice; every location must be different")
        seen.add(place.strip().lower())
        if "," in place or len(strip_article(place).split()) > 3:
            problems.append(f"locations.{i}: {place!r} must be a place of at most two words without commas")
        for name in names:
            if name and re.search(rf"\b{re.escape(name)}\b", place, flags=re.IGNORECASE):
                problems.append(f"locations.{i}: {place!r} must not contain the character name {name!r}")
    known = set(outline.locations)
    for a, act in enumerate(outline.acts):
        for place in act.locations:
            if place not in known:
                problems.append(f"acts.{a}.locations: {place!r} is not one of the locations (copy one exactly)")
        if len(set(act.locations)) != len(act.locations):
            problems.append(f"acts.{a}.locations: a location is listed twice")
        problems += _qa_problems(act.qa, f"acts.{a}.qa")
    return problems


def scenes_problems(answer: Any) -> list[str]:
    """What is wrong with a level-2 answer beyond its schema."""
    return _blank(answer, "") + _qa_problems(answer.qa, "qa")


_PROMPT_FORM = re.compile(r"^at (?P<place>[^,]+), (?P<action>[^,]+), (?P<expression>[^,]+)$", re.IGNORECASE)


def parse_prompt(prompt: str) -> tuple[str, str, str] | None:
    """(place, action, expression) of an 'at <place>, <who> is <doing what>, <expression>' prompt."""
    match = _PROMPT_FORM.match(prompt.strip().rstrip("."))
    if match is None:
        return None
    return match["place"].strip(), match["action"].strip(), match["expression"].strip()


def prompt_problems(where: str, prompt: str, location: str, characters: list[str], expression: str,
                    cast: tuple[str, ...]) -> list[str]:
    """Why a keyframe prompt breaks the strict form or disagrees with its location/characters/expression."""
    parsed = parse_prompt(prompt)
    if parsed is None:
        return [f"{where}.prompt: {prompt!r} is not of the form 'at the <place>, <who> is <doing what>, "
                "<facial expression>' with exactly two commas"]
    place, action, said_expression = parsed
    problems = []
    if strip_article(place).lower() != strip_article(location).lower():
        problems.append(f"{where}.prompt: the place {place!r} differs from the keyframe's location {location!r}")
    verb = re.search(r"\b(?:is|are)\s+([a-z]+)", action, flags=re.IGNORECASE)
    if verb is None or verb.group(1).lower() not in VERBS:
        problems.append(f"{where}.prompt: {action!r} must say '<who> is <verb>ing ...' with one of the verbs "
                        + ", ".join(VERBS))
    for name in characters:
        if not re.search(rf"\b{re.escape(name)}\b", action):
            problems.append(f"{where}.prompt: {name!r} is listed in characters but not named in the prompt")
    for name in cast:
        if name not in characters and re.search(rf"\b{re.escape(name)}\b", action):
            problems.append(f"{where}.characters: {name!r} is named in the prompt, so list them in characters")
    if said_expression.lower() != expression.strip().lower():
        problems.append(f"{where}.expression: {expression!r} must be the prompt's expression {said_expression!r}")
    return problems


def shots_problems(answer: Any, cast: tuple[str, ...]) -> list[str]:
    """What is wrong with a level-3 answer beyond its schema."""
    problems = _blank(answer, "")
    for k, shot in enumerate(answer.shots):
        where = f"shots.{k}"
        if len(set(shot.characters)) != len(shot.characters):
            problems.append(f"{where}.characters: a character is listed twice")
        problems += prompt_problems(where, shot.prompt, shot.location, list(shot.characters), shot.expression, cast)
    spoken: set[int] = set()
    for i, line in enumerate(answer.dialogue):
        if line.shot in spoken:
            problems.append(f"dialogue.{i}.shot: keyframe {line.shot} already has a line; use another keyframe")
        spoken.add(line.shot)
        if 1 <= line.shot <= len(answer.shots) and line.speaker not in answer.shots[line.shot - 1].characters:
            problems.append(f"dialogue.{i}.speaker: {line.speaker} is not in keyframe {line.shot}; "
                            "pick a keyframe they are in or add them to it")
    for q, qa in enumerate(answer.qa):
        problems += _qa_problems(qa, f"qa.{q}")
    return problems


def movie_qa_problems(answer: Any) -> list[str]:
    """What is wrong with the whole-movie questions beyond their schema."""
    # Overview and temporal questions are often requests ("Describe the events ..."), as in the reference.
    problems = _blank(answer, "")
    for i, qa in enumerate(answer.plot):
        problems += _qa_problems(qa, f"plot.{i}")
    return problems
