"""The movie contract: one validated :class:`MovieScript` per movie.

A script is the only object the pipeline stages hand each other (writer -> QA -> renderer -> packer ->
shards -> Hub). It is plain JSON, versioned by ``schema_version``, and every field maps onto an Arrow
type so that ``datasets`` can declare it as explicit features (no free-form dictionaries).

Hierarchy: acts -> scenes -> shots. Every shot becomes one keyframe; keyframe ``i`` is shown at
``t = i`` seconds (1 fps, what LLaMA-VID samples), which the flat :attr:`MovieScript.timeline` records
together with the subtitle shown on that frame.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ScriptValidationError

SCHEMA_VERSION = "1.0"
FRAMES_PER_SECOND = 1
QA_TYPES = ("overview", "plot", "temporal", "act", "scene", "shot")
QAType = Literal["overview", "plot", "temporal", "act", "scene", "shot"]

# WebDataset splits a member name at its first dot to find the sample key, so ids must not contain one.
_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Style(_Strict):
    """The visual style of a movie: one keyword (names the learned style embedding) plus phrases."""

    keyword: str = Field(description="One word, e.g. 'Romantic'; it names the style token.")
    phrases: list[str] = Field(default_factory=list, description="Adjectives and short phrases.")
    emphasised: list[str] = Field(
        default_factory=list, description="Phrases to weight up (written ((like this)) in prompts)."
    )

    @field_validator("keyword")
    @classmethod
    def _one_word(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z][A-Za-z-]*", value):
            raise ValueError(f"style keyword must be a single word of letters, got {value!r}")
        return value

    @model_validator(mode="after")
    def _emphasised_are_phrases(self) -> Style:
        unknown = [p for p in self.emphasised if p not in self.phrases]
        if unknown:
            raise ValueError(f"emphasised phrases {unknown} are not among the style phrases")
        return self

    def prompt_suffix(self) -> str:
        """The style phrases as a prompt fragment, emphasised ones wrapped in double parentheses."""
        return ", ".join(f"(({p}))" if p in self.emphasised else p for p in self.phrases)


class Character(_Strict):
    """A named character; renderers replace the name by ``lookalike`` + outfit colour."""

    name: str
    role: Literal["main", "supporting"]
    lookalike: str = Field(description="Who or what the character looks like, e.g. 'a tall woman with grey hair'.")
    outfit_colour: str = Field(description="One colour word, e.g. 'red'.")
    description: str = ""

    def visual_description(self) -> str:
        """What an image model is told instead of the character's name."""
        return f"{self.lookalike} in {self.outfit_colour}"


class DialogueLine(_Strict):
    speaker: str
    text: str

    def subtitle(self) -> str:
        return f"{self.speaker}: {self.text}"


class Shot(_Strict):
    """One keyframe: an image prompt and what it shows, with an optional spoken line."""

    prompt: str = Field(description="'at <place>, <who> is <doing what>, <expression>' with character names.")
    location: str
    characters: list[str] = Field(default_factory=list)
    action: str = Field(description="What happens, one short clause, e.g. 'Mara is holding a letter'.")
    expression: str | None = None
    dialogue: DialogueLine | None = None


class Scene(_Strict):
    title: str
    location: str
    summary: str
    shots: list[Shot]


class Act(_Strict):
    title: str
    locations: list[str]
    summary: str
    scenes: list[Scene]


class FrameSpan(_Strict):
    """An inclusive range of frame indices (= seconds at 1 fps)."""

    start: int = Field(ge=0)
    end: int = Field(ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> FrameSpan:
        if self.end < self.start:
            raise ValueError(f"frame span ends ({self.end}) before it starts ({self.start})")
        return self


class Frame(_Strict):
    """One entry of the flat timeline."""

    index: int = Field(ge=0)
    time: float = Field(ge=0, description="Seconds from the start of the movie.")
    act: int = Field(ge=0)
    scene: int = Field(ge=0, description="Index of the scene within its act.")
    shot: int = Field(ge=0, description="Index of the shot within its scene.")
    subtitle: str | None = None


class QA(_Strict):
    """A question-answer pair grounded in the frames its answer rests on."""

    type: QAType
    question: str
    answer: str
    evidence: FrameSpan


class PromptRecord(_Strict):
    """A prompt template used to write the script, by name, version and content hash."""

    name: str
    version: str
    sha256: str


class WriterProvenance(_Strict):
    name: str = Field(description="'procedural' or 'openai'.")
    model: str | None = None
    prompts: list[PromptRecord] = Field(default_factory=list)
    temperature: float | None = None
    seed: int | None = None


class RendererProvenance(_Strict):
    name: str = Field(description="'storyboard' or 'diffusers'.")
    model: str | None = None
    refiner: str | None = None
    preset: str | None = None
    scheduler: str | None = None
    steps: int | None = None
    guidance_scale: float | None = None
    seed: int | None = Field(default=None, description="Base seed; frame seeds derive from movie id and index.")
    width: int
    height: int
    fps: int = FRAMES_PER_SECOND
    style_embedding_sha256: str | None = None
    sampler: str | None = Field(default=None, description="The preset's sampler recipe, e.g. 'dpmsolver++', 'lcm'.")
    timesteps: list[int] | None = Field(default=None, description="Fixed denoising timesteps, when the recipe has them.")
    distilled_weights: str | None = Field(default=None, description="Few-step weights (Hub id or path) the UNet ran with.")
    distilled_kind: str | None = Field(default=None, description="lightning, hyper, dmd2 or lcm: how they are sampled.")


class Provenance(_Strict):
    writer: WriterProvenance
    renderer: RendererProvenance | None = None
    package_version: str
    created_at: str | None = Field(default=None, description="ISO 8601 time the movie was packed.")


class MovieScript(_Strict):
    """One synthetic movie: plot in three levels, a frame timeline, grounded QA and provenance."""

    schema_version: str = SCHEMA_VERSION
    id: str
    title: str
    theme: str
    genre: str
    overview: str
    style: Style
    locations: list[str]
    characters: list[Character]
    acts: list[Act]
    timeline: list[Frame] = Field(default_factory=list, description="Derived from the shots when left empty.")
    qa: list[QA] = Field(default_factory=list)
    provenance: Provenance

    # ----------------------------------------------------------------------------------- validation

    @field_validator("id")
    @classmethod
    def _valid_id(cls, value: str) -> str:
        if not _ID_PATTERN.match(value):
            raise ValueError(
                f"id {value!r} must be 1-128 letters, digits, '-' or '_' (no dots: it becomes the WebDataset key)"
            )
        return value

    @field_validator("schema_version")
    @classmethod
    def _known_version(cls, value: str) -> str:
        if value.split(".")[0] != SCHEMA_VERSION.split(".")[0]:
            raise ValueError(f"schema_version {value} is not readable by this package (reads {SCHEMA_VERSION})")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> MovieScript:
        if not self.acts:
            raise ValueError("a movie needs at least one act")
        _require_unique("location", self.locations)
        _require_unique("character name", [c.name for c in self.characters])
        known_locations = set(self.locations)
        known_names = {c.name for c in self.characters}
        for (a, s, k), shot in self._walk_shots():
            where = f"act {a} scene {s} shot {k}"
            if shot.location not in known_locations:
                raise ValueError(f"{where}: location {shot.location!r} is not one of the script's locations")
            unknown = [n for n in shot.characters if n not in known_names]
            if unknown:
                raise ValueError(f"{where}: characters {unknown} are not in the cast")
            if shot.dialogue is not None and shot.dialogue.speaker not in known_names:
                raise ValueError(f"{where}: speaker {shot.dialogue.speaker!r} is not in the cast")
        for a, act in enumerate(self.acts):
            if not act.scenes:
                raise ValueError(f"act {a} has no scenes")
            for s, scene in enumerate(act.scenes):
                if not scene.shots:
                    raise ValueError(f"act {a} scene {s} has no shots")
                if scene.location not in known_locations:
                    raise ValueError(f"act {a} scene {s}: location {scene.location!r} is not one of the locations")
        expected = self._derive_timeline()
        if not self.timeline:
            self.timeline = expected
        elif self.timeline != expected:
            raise ValueError("the timeline does not match the shots (regenerate it by leaving it empty)")
        n = len(self.timeline)
        for i, qa in enumerate(self.qa):
            if qa.evidence.end >= n:
                raise ValueError(f"qa {i}: evidence frame {qa.evidence.end} is past the last frame {n - 1}")
        return self

    def _walk_shots(self) -> Iterator[tuple[tuple[int, int, int], Shot]]:
        for a, act in enumerate(self.acts):
            for s, scene in enumerate(act.scenes):
                for k, shot in enumerate(scene.shots):
                    yield (a, s, k), shot

    def _derive_timeline(self) -> list[Frame]:
        return [
            Frame(
                index=i,
                time=i / FRAMES_PER_SECOND,
                act=a,
                scene=s,
                shot=k,
                subtitle=shot.dialogue.subtitle() if shot.dialogue else None,
            )
            for i, ((a, s, k), shot) in enumerate(self._walk_shots())
        ]

    # ------------------------------------------------------------------------------------ navigation

    @property
    def num_frames(self) -> int:
        return len(self.timeline)

    def shots(self) -> list[Shot]:
        """All shots in timeline order (shot ``i`` is frame ``i``)."""
        return [shot for _, shot in self._walk_shots()]

    def character(self, name: str) -> Character:
        for c in self.characters:
            if c.name == name:
                return c
        raise KeyError(name)

    def act_span(self, act: int) -> FrameSpan:
        frames = [f.index for f in self.timeline if f.act == act]
        return FrameSpan(start=frames[0], end=frames[-1])

    def scene_span(self, act: int, scene: int) -> FrameSpan:
        frames = [f.index for f in self.timeline if f.act == act and f.scene == scene]
        return FrameSpan(start=frames[0], end=frames[-1])

    def full_span(self) -> FrameSpan:
        return FrameSpan(start=0, end=self.num_frames - 1)

    # ------------------------------------------------------------------------------------ (de)serialise

    def to_json(self, indent: int | None = None) -> str:
        return self.model_dump_json(indent=indent)

    @classmethod
    def from_json(cls, data: str | bytes, source: str = "movie script") -> MovieScript:
        """Parse and validate a script; raise :class:`ScriptValidationError` with one readable sentence."""
        try:
            return cls.model_validate_json(data)
        except ValidationError as err:
            raise ScriptValidationError(f"{source} is not a valid movie script: {describe_validation_error(err)}.") from None

    @classmethod
    def from_dict(cls, data: dict, source: str = "movie script") -> MovieScript:
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            raise ScriptValidationError(f"{source} is not a valid movie script: {describe_validation_error(err)}.") from None

    # --------------------------------------------------------------------------------------- exports

    def to_benchmark_json(self) -> dict:
        """The MovieLLM long-video benchmark entry: 1 overview, 2 plot and 1 temporal QA pair."""

        def pick(kind: str, count: int) -> list[dict]:
            pairs = [q for q in self.qa if q.type == kind][:count]
            if len(pairs) < count:
                raise ScriptValidationError(
                    f"movie {self.id} has {len(pairs)} {kind} QA pairs but the benchmark format needs {count}."
                )
            return [{"Question": q.question, "Answer": q.answer} for q in pairs]

        return {
            "movie_title": self.title,
            "QA": {"overview_qa": pick("overview", 1), "plot_qa": pick("plot", 2), "temporal_qa": pick("temporal", 1)},
        }

    def to_dreamframe_story(self) -> dict:
        """The DreamFrame ``story_info`` layout: characters, frames and dialogue in order, QA, overview."""
        img_diag: list[list[str]] = []
        for shot in self.shots():
            img_diag.append(["frame", shot.prompt])
            if shot.dialogue is not None:
                img_diag.append(["dialogue", shot.dialogue.subtitle()])
        return {
            "character": {c.name: c.visual_description() for c in self.characters},
            "img_diag": img_diag,
            "QA": [{"Question": q.question, "Answer": q.answer} for q in self.qa],
            "overview": self.overview,
        }


def _require_unique(what: str, values: list[str]) -> None:
    seen: set[str] = set()
    for v in values:
        if v in seen:
            raise ValueError(f"{what} {v!r} appears twice")
        seen.add(v)


def describe_validation_error(err: ValidationError) -> str:
    """Condense pydantic's multi-line report into one clause naming the first problem and where it is."""
    first = err.errors()[0]
    location = ".".join(str(p) for p in first.get("loc", ()))
    message = first.get("msg", "invalid value").removeprefix("Value error, ")
    more = len(err.errors()) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"{location + ': ' if location else ''}{message}{suffix}"


def load_script(path: str) -> MovieScript:
    """Read one script from a JSON file with a clear error for missing or malformed files."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as err:
        raise ScriptValidationError(f"cannot read movie script {path}: {err.strerror}.") from None
    try:
        json.loads(data)
    except json.JSONDecodeError as err:
        raise ScriptValidationError(f"{path} is not JSON ({err.msg} at line {err.lineno}).") from None
    return MovieScript.from_json(data, source=path)
