"""The judge prompts (versioned files in ``prompts/``) and the JSON answers they ask for.

A prompt file is ``<name>.v<version>.md``: ``# name:`` and ``# version:`` lines, then a ``## System``
and a ``## User`` section with ``$placeholders``. The wording is ours; the criteria are those of the
original judges (LLaMA-VID's open-ended QA judge, the Video-ChatGPT benchmark's five judges, MovieLLM's
pairwise movie judge). The sha256 of every file used goes into the results, and the rendered text into
the cache key, so editing a prompt can never be mistaken for the old one.

Answers are parsed as JSON and validated by the pydantic models below; nothing a judge writes is ever
evaluated as Python.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from moviellm_data.errors import ConfigError
from moviellm_data.prompts import parse_template


class QAVerdict(BaseModel):
    """Open-ended QA: does the prediction match the answer, and how well (0-5)."""

    model_config = ConfigDict(extra="forbid")

    verdict: Literal["yes", "no"]
    score: int = Field(ge=0, le=5)


class DimensionScore(BaseModel):
    """One Video-ChatGPT dimension: an integer score from 0 to 5."""

    model_config = ConfigDict(extra="forbid")

    score: int = Field(ge=0, le=5)


class PairScores(BaseModel):
    model_config = ConfigDict(extra="forbid")

    first: float = Field(ge=0, le=5)
    second: float = Field(ge=0, le=5)


class PairwiseVerdict(BaseModel):
    """MovieLLM's pairwise judge: which of the two answers shown is better, and a 0-5 score for each."""

    model_config = ConfigDict(extra="forbid")

    better: Literal["first", "second"]
    scores: PairScores


class MovieScore(BaseModel):
    """Long-video QA scored alone against the reference: 0-5, decimals allowed."""

    model_config = ConfigDict(extra="forbid")

    score: float = Field(ge=0, le=5)


@dataclass(frozen=True)
class JudgePrompt:
    """One judge: its prompt file (name, version, sha256), the placeholders it fills, its answer model."""

    name: str
    version: str
    sha256: str
    system: str
    user: str
    answer_model: type[BaseModel]

    def render(self, values: dict[str, str]) -> tuple[str, str]:
        """(system, user) with every placeholder filled."""
        from string import Template

        return Template(self.system).substitute(values), Template(self.user).substitute(values)

    def record(self) -> dict:
        return {"file": f"{self.name}.v{self.version}.md", "version": self.version, "sha256": self.sha256}


# name -> (version in use, placeholders, answer model)
_JUDGES: dict[str, tuple[str, frozenset[str], type[BaseModel]]] = {
    "open_ended_qa": ("1", frozenset({"question", "answer", "prediction"}), QAVerdict),
    "vcg_correctness": ("1", frozenset({"question", "answer", "prediction"}), DimensionScore),
    "vcg_detail": ("1", frozenset({"question", "answer", "prediction"}), DimensionScore),
    "vcg_context": ("1", frozenset({"question", "answer", "prediction"}), DimensionScore),
    "vcg_temporal": ("1", frozenset({"question", "answer", "prediction"}), DimensionScore),
    "vcg_consistency": ("1", frozenset({"question", "question_2", "answer", "prediction", "prediction_2"}),
                        DimensionScore),
    "movie_compare": ("1", frozenset({"question", "answer", "first", "second"}), PairwiseVerdict),
    "movie_score": ("1", frozenset({"question", "answer", "prediction"}), MovieScore),
}
_SECTION = re.compile(r"^## (System|User)[ \t]*$", re.MULTILINE)


def load_judge(name: str) -> JudgePrompt:
    """The judge prompt ``name`` shipped in ``moviellm_model/evaluation/prompts/``."""
    version, placeholders, answer_model = _JUDGES[name]
    filename = f"{name}.v{version}.md"
    data = resources.files(__package__).joinpath("prompts", filename).read_bytes()
    source = f"moviellm_model/evaluation/prompts/{filename}"
    template = parse_template(data, source, name, placeholders=placeholders, filled_by="the judge")
    if template.version != version:
        raise ConfigError(f"{source} says version {template.version}, its name says {version}; make them agree.")
    parts = _SECTION.split(template.body)
    # ["", "System", text, "User", text]
    sections = {parts[i]: parts[i + 1].strip() for i in range(1, len(parts) - 1, 2)}
    if set(sections) != {"System", "User"}:
        raise ConfigError(f"{source} needs a '## System' and a '## User' section.")
    return JudgePrompt(name=name, version=version, sha256=template.sha256, system=sections["System"],
                       user=sections["User"], answer_model=answer_model)


__all__ = ["DimensionScore", "JudgePrompt", "MovieScore", "PairScores", "PairwiseVerdict", "QAVerdict", "load_judge"]
