"""Reading ``predictions.jsonl``, the file ``moviellm answer`` writes and ``moviellm eval`` judges.

One JSON object per line (the contract is documented in the README, "Evaluate"): the question, the
reference answer, the model's prediction, which benchmark, split and question type it belongs to, and
which model and generation settings produced it. ``moviellm answer`` appends and fsyncs line by line, so
a killed run can leave a cut last line: it is ignored here (and redone by the next ``answer`` run).
Every other problem is one sentence naming the file and line.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from moviellm_data.errors import ConfigError

BENCHMARKS = ("movie_qa_bench", "msvd_qa", "msrvtt_qa", "activitynet_qa", "video_chatgpt")


class PredictionsError(ConfigError):
    """A predictions file cannot be judged as it is (missing, not JSON lines, wrong fields, wrong benchmark)."""


class ModelRecord(BaseModel):
    """Which model answered: ``name_or_path``, ``revision`` and ``dtype`` (more keys are kept)."""

    model_config = ConfigDict(extra="allow")

    name_or_path: str
    revision: str | None = None
    dtype: str | None = None


class Prediction(BaseModel):
    """One answered question (or, for the Video-ChatGPT consistency split, one answered question pair)."""

    model_config = ConfigDict(extra="allow")

    id: str
    benchmark: Literal["movie_qa_bench", "msvd_qa", "msrvtt_qa", "activitynet_qa", "video_chatgpt"]
    split: str
    video_id: str
    qa_type: str = ""
    question: str
    answer: str
    prediction: str
    question_2: str | None = None
    prediction_2: str | None = None
    model: ModelRecord
    generation: dict = {}
    moviellm_version: str | None = None


@dataclass(frozen=True)
class PredictionsFile:
    """The predictions of one file, in file order, with what identifies the file."""

    path: Path
    sha256: str
    rows: list[Prediction]
    cut_last_line: bool  # a killed `moviellm answer` left a partial line, which was ignored

    @property
    def benchmark(self) -> str:
        return self.rows[0].benchmark

    @property
    def model(self) -> ModelRecord:
        return self.rows[0].model

    @property
    def ids(self) -> list[str]:
        return [row.id for row in self.rows]

    def describe(self) -> dict:
        """What results.json records about the file."""
        return {"path": str(self.path), "sha256": self.sha256, "lines": len(self.rows),
                "model": self.model.model_dump(), "ignored_cut_last_line": self.cut_last_line}


def read_predictions(path: str | Path, option: str = "--predictions") -> PredictionsFile:
    """Read and check a predictions file; one sentence (:class:`PredictionsError`) when it cannot be used."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise PredictionsError(f"{option} {path} does not exist; write it with `moviellm answer --out {path}` "
                               "or give the path of an existing predictions file.") from None
    except IsADirectoryError:
        raise PredictionsError(f"{option} {path} is a folder; give the predictions .jsonl file.") from None
    except OSError as err:
        raise PredictionsError(f"cannot read {option} {path} ({err.strerror}); check the path and its permissions.") from None
    digest = hashlib.sha256(data).hexdigest()
    lines = data.split(b"\n")
    complete_end = data.endswith(b"\n")
    rows: list[Prediction] = []
    cut = False
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        last_partial = number == len(lines) and not complete_end
        try:
            value = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            if last_partial:
                cut = True  # a killed writer's cut last line: ignored, as `moviellm answer` itself does
                continue
            raise PredictionsError(f"line {number} of {path} is not JSON; a predictions file has one JSON object per "
                                   "line, as `moviellm answer` writes it.") from None
        try:
            rows.append(Prediction.model_validate(value))
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ())) or "the line"
            raise PredictionsError(f"line {number} of {path} is not a prediction ({where}: {first.get('msg')}); "
                                   "see the predictions format in the README (Evaluate).") from None
    if not rows:
        raise PredictionsError(f"{path} holds no predictions; run `moviellm answer --out {path}` first.")
    # Ids are unique within a split (Video-ChatGPT's three splits number their questions each on their own).
    counts = Counter((r.split, r.id) for r in rows)
    duplicates = [key for key, n in counts.items() if n > 1]
    if duplicates:
        (split, id_) = duplicates[0]
        raise PredictionsError(f"id {id_!r} appears {counts[duplicates[0]]} times in split {split!r} of {path}; "
                               "every line of a split needs its own id (give each question a unique id).")
    benchmarks = sorted({r.benchmark for r in rows})
    if len(benchmarks) > 1:
        raise PredictionsError(f"{path} mixes benchmarks ({', '.join(benchmarks)}); judge one benchmark per "
                               "predictions file.")
    return PredictionsFile(path=path, sha256=digest, rows=rows, cut_last_line=cut)


__all__ = ["BENCHMARKS", "ModelRecord", "Prediction", "PredictionsError", "PredictionsFile", "read_predictions"]
