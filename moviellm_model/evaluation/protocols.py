"""The judging protocols: which predictions each one reads, what it asks the judge, how it aggregates.

- ``msvd-qa``, ``msrvtt-qa``, ``activitynet-qa`` (LLaMA-VID's open-ended QA judge): a yes/no verdict and
  a 0-5 score per question; accuracy = yes / (yes + no) and the mean score, over the questions judged.
- ``vcgbench`` (the Video-ChatGPT benchmark): correctness, detail orientation and contextual
  understanding on the ``generic`` split, temporal understanding on ``temporal``, consistency on
  ``consistency``, each a mean 0-5 score. The consistency judge gets both phrasings of the question
  (the original sent the first one twice).
- ``movie-compare`` (MovieLLM's long-video protocol): the model's answer and a baseline's answer to the
  same question, judged side by side, per question type (overview, plot, temporal): the compare ratio
  (share of questions where an answer was judged better) and each model's mean 0-5 score. With
  ``both_orders`` every pair is judged twice, once with each answer shown first; a pair then counts
  half a win for each order the model wins, and each model's score is the mean of its two scores, so a
  judge's preference for the first (or second) position favours neither model.
- ``movie-score``: each long-video answer scored alone against the reference (0-5), per question type.

Every number is computed from what was judged; items the judge could not judge are counted and listed
(``unjudged``), never dropped silently and never counted as wrong.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from statistics import fmean
from typing import Any

from .predictions import Prediction, PredictionsError, PredictionsFile

MOVIE_QA_TYPES = ("overview", "plot", "temporal")
VCG_DIMENSIONS = ("correctness", "detail", "context", "temporal", "consistency")
_VCG_SPLIT = {"correctness": "generic", "detail": "generic", "context": "generic", "temporal": "temporal",
              "consistency": "consistency"}
MODEL_FIRST, BASELINE_FIRST = "model-first", "baseline-first"


@dataclass(frozen=True)
class JudgeTask:
    """One judge call: the item it is about, the group it counts in, the prompt and its values."""

    item_id: str
    group: str  # the aggregation group: the benchmark, a Video-ChatGPT dimension or a movie question type
    judge: str  # the prompt name (see judges.py)
    values: dict[str, str] = field(hash=False)
    order: str | None = None  # movie-compare: which answer is shown first

    @property
    def key(self) -> tuple[str, str, str | None]:
        return self.group, self.item_id, self.order

    @property
    def label(self) -> str:
        return f"{self.judge} {self.item_id}" + (f" ({self.order})" if self.order else "")


@dataclass(frozen=True)
class Outcome:
    """What the judge said about one task (``value``), or why it could not (``reason``, ``kind``)."""

    task: JudgeTask
    value: Any = None
    reason: str | None = None
    kind: str | None = None
    judge_model: str | None = None
    cached: bool = False

    @property
    def judged(self) -> bool:
        return self.reason is None


@dataclass(frozen=True)
class Protocol:
    """A judging protocol: its name, the benchmark its predictions must come from, its judges."""

    name: str
    benchmark: str
    title: str
    judges: tuple[str, ...]
    needs_baseline: bool = False

    def check(self, predictions: PredictionsFile, baseline: PredictionsFile | None) -> None:
        """One sentence when the files do not fit this protocol."""
        if predictions.benchmark != self.benchmark:
            hint = " or ".join(p.name for p in PROTOCOLS.values() if p.benchmark == predictions.benchmark)
            raise PredictionsError(
                f"{predictions.path} holds {predictions.benchmark} predictions, but --protocol {self.name} judges "
                f"{self.benchmark}; use --protocol {hint}." if hint else
                f"{predictions.path} holds {predictions.benchmark} predictions, which no protocol judges.")
        if self.needs_baseline and baseline is None:
            raise PredictionsError(f"--protocol {self.name} compares two models; give the other model's predictions "
                                   "with --baseline OTHER.jsonl.")
        if not self.needs_baseline and baseline is not None:
            raise PredictionsError(f"--baseline is only used by --protocol movie-compare, not {self.name}; drop it.")

    def tasks(self, predictions: PredictionsFile, baseline: PredictionsFile | None = None,
              both_orders: bool = False) -> list[JudgeTask]:
        raise NotImplementedError

    def aggregate(self, tasks: list[JudgeTask], outcomes: dict[tuple, Outcome], both_orders: bool = False) -> dict:
        raise NotImplementedError


def _mean(values: list[float]) -> float | None:
    return fmean(values) if values else None


def _counts(tasks: list[JudgeTask], outcomes: dict[tuple, Outcome]) -> dict[str, int]:
    judged = sum(1 for t in tasks if outcomes[t.key].judged)
    return {"total": len(tasks), "judged": judged, "unjudged": len(tasks) - judged}


# ------------------------------------------------------------------------------------ open-ended QA


@dataclass(frozen=True)
class OpenEndedQA(Protocol):
    def tasks(self, predictions, baseline=None, both_orders=False):
        return [JudgeTask(row.id, self.benchmark, "open_ended_qa",
                          {"question": row.question, "answer": row.answer, "prediction": row.prediction})
                for row in predictions.rows]

    def aggregate(self, tasks, outcomes, both_orders=False):
        judged = [outcomes[t.key].value for t in tasks if outcomes[t.key].judged]
        yes = sum(1 for v in judged if v.verdict == "yes")
        return {self.benchmark: {
            "accuracy": yes / len(judged) if judged else None,
            "score": _mean([v.score for v in judged]),
            "yes": yes,
            "no": len(judged) - yes,
            **_counts(tasks, outcomes),
        }}


# ---------------------------------------------------------------------------------- Video-ChatGPT


@dataclass(frozen=True)
class VideoChatGPTBench(Protocol):
    def tasks(self, predictions, baseline=None, both_orders=False):
        splits = Counter(row.split for row in predictions.rows)
        unknown = sorted(set(splits) - set(_VCG_SPLIT.values()))
        if unknown:
            raise PredictionsError(f"{predictions.path} has lines of split {unknown[0]!r}; the Video-ChatGPT "
                                   "benchmark's splits are generic, temporal and consistency.")
        tasks = []
        for dimension in VCG_DIMENSIONS:
            for row in predictions.rows:
                if row.split != _VCG_SPLIT[dimension]:
                    continue
                values = {"question": row.question, "answer": row.answer, "prediction": row.prediction}
                if dimension == "consistency":
                    if row.question_2 is None or row.prediction_2 is None:
                        raise PredictionsError(f"line {row.id!r} of {predictions.path} is in the consistency split "
                                               "but lacks question_2 or prediction_2; answer both questions.")
                    values |= {"question_2": row.question_2, "prediction_2": row.prediction_2}
                tasks.append(JudgeTask(row.id, dimension, f"vcg_{dimension}", values))
        return tasks

    def aggregate(self, tasks, outcomes, both_orders=False):
        metrics: dict[str, dict] = {}
        for dimension in VCG_DIMENSIONS:
            mine = [t for t in tasks if t.group == dimension]
            if not mine:
                continue
            scores = [outcomes[t.key].value.score for t in mine if outcomes[t.key].judged]
            metrics[dimension] = {"score": _mean(scores), **_counts(mine, outcomes)}
        means = [m["score"] for m in metrics.values()]
        if len(metrics) == len(VCG_DIMENSIONS) and all(s is not None for s in means):
            metrics["average"] = {"score": fmean(means)}
        return metrics


# ------------------------------------------------------------------------------ long-video (MovieLLM)


def _movie_rows(predictions: PredictionsFile) -> list[Prediction]:
    for row in predictions.rows:
        if row.qa_type not in MOVIE_QA_TYPES:
            raise PredictionsError(f"line {row.id!r} of {predictions.path} has qa_type {row.qa_type!r}; the long-video "
                                   f"protocol judges {', '.join(MOVIE_QA_TYPES)} questions.")
    return predictions.rows


@dataclass(frozen=True)
class MovieCompare(Protocol):
    def tasks(self, predictions, baseline=None, both_orders=False):
        assert baseline is not None
        rows = _movie_rows(predictions)
        other = {row.id: row for row in _movie_rows(baseline)}
        missing = [r.id for r in rows if r.id not in other]
        extra = sorted(set(other) - {r.id for r in rows})
        if missing or extra:
            which = (f"lacks id {missing[0]!r} (and {len(missing) - 1} more)" if missing
                     else f"has id {extra[0]!r} (and {len(extra) - 1} more) that {predictions.path} lacks")
            raise PredictionsError(f"--baseline {baseline.path} {which}; compare predictions of the same "
                                   "benchmark questions.")
        tasks = []
        for row in rows:
            base = other[row.id]
            if (base.question, base.answer, base.qa_type) != (row.question, row.answer, row.qa_type):
                raise PredictionsError(f"id {row.id!r} asks another question (or has another reference answer) in "
                                       f"--baseline {baseline.path}; compare predictions of the same benchmark.")
            common = {"question": row.question, "answer": row.answer}
            tasks.append(JudgeTask(row.id, row.qa_type, "movie_compare",
                                   {**common, "first": row.prediction, "second": base.prediction}, MODEL_FIRST))
            if both_orders:
                tasks.append(JudgeTask(row.id, row.qa_type, "movie_compare",
                                       {**common, "first": base.prediction, "second": row.prediction}, BASELINE_FIRST))
        return tasks

    def aggregate(self, tasks, outcomes, both_orders=False):
        metrics: dict[str, dict] = {}
        for group in (*MOVIE_QA_TYPES, "all"):
            mine = [t for t in tasks if group == "all" or t.group == group]
            if mine:
                metrics[group] = self._group(mine, outcomes, both_orders)
        return metrics

    @staticmethod
    def _group(tasks: list[JudgeTask], outcomes: dict[tuple, Outcome], both_orders: bool) -> dict:
        by_item: dict[str, dict[str, Outcome]] = {}
        for task in tasks:
            by_item.setdefault(task.item_id, {})[task.order] = outcomes[task.key]
        wins: list[float] = []
        model_scores: list[float] = []
        baseline_scores: list[float] = []
        agree = 0
        first_chosen = calls_judged = 0
        for pair in by_item.values():
            for outcome in pair.values():
                if outcome.judged:
                    calls_judged += 1
                    first_chosen += outcome.value.better == "first"
            if not all(o.judged for o in pair.values()):
                continue  # with both orders, a pair counts only when both were judged (or the bias would not cancel)
            forward = pair[MODEL_FIRST].value
            model_wins = [forward.better == "first"]
            model_score = [forward.scores.first]
            baseline_score = [forward.scores.second]
            if both_orders:
                backward = pair[BASELINE_FIRST].value
                model_wins.append(backward.better == "second")
                model_score.append(backward.scores.second)
                baseline_score.append(backward.scores.first)
                agree += model_wins[0] == model_wins[1]
            wins.append(fmean(model_wins))
            model_scores.append(fmean(model_score))
            baseline_scores.append(fmean(baseline_score))
        pairs = len(by_item)
        ratio = _mean(wins)
        result = {
            "compare_ratio": {"model": ratio, "baseline": None if ratio is None else 1.0 - ratio},
            "score": {"model": _mean(model_scores), "baseline": _mean(baseline_scores)},
            "total": pairs,
            "judged": len(wins),
            "unjudged": pairs - len(wins),
        }
        if both_orders:
            result["position"] = {
                "orders_agree": agree / len(wins) if wins else None,
                "first_shown_chosen": first_chosen / calls_judged if calls_judged else None,
            }
        return result


@dataclass(frozen=True)
class MovieScoreProtocol(Protocol):
    def tasks(self, predictions, baseline=None, both_orders=False):
        return [JudgeTask(row.id, row.qa_type, "movie_score",
                          {"question": row.question, "answer": row.answer, "prediction": row.prediction})
                for row in _movie_rows(predictions)]

    def aggregate(self, tasks, outcomes, both_orders=False):
        metrics: dict[str, dict] = {}
        for group in (*MOVIE_QA_TYPES, "all"):
            mine = [t for t in tasks if group == "all" or t.group == group]
            if mine:
                scores = [outcomes[t.key].value.score for t in mine if outcomes[t.key].judged]
                metrics[group] = {"score": _mean(scores), **_counts(mine, outcomes)}
        return metrics


PROTOCOLS: dict[str, Protocol] = {
    "msvd-qa": OpenEndedQA("msvd-qa", "msvd_qa", "MSVD-QA", ("open_ended_qa",)),
    "msrvtt-qa": OpenEndedQA("msrvtt-qa", "msrvtt_qa", "MSRVTT-QA", ("open_ended_qa",)),
    "activitynet-qa": OpenEndedQA("activitynet-qa", "activitynet_qa", "ActivityNet-QA", ("open_ended_qa",)),
    "vcgbench": VideoChatGPTBench("vcgbench", "video_chatgpt", "Video-ChatGPT benchmark",
                                  tuple(f"vcg_{d}" for d in VCG_DIMENSIONS)),
    "movie-compare": MovieCompare("movie-compare", "movie_qa_bench", "Long-video QA, pairwise (MovieLLM)",
                                  ("movie_compare",), needs_baseline=True),
    "movie-score": MovieScoreProtocol("movie-score", "movie_qa_bench", "Long-video QA, scored alone",
                                      ("movie_score",)),
}

__all__ = ["BASELINE_FIRST", "JudgeTask", "MODEL_FIRST", "MOVIE_QA_TYPES", "Outcome", "PROTOCOLS", "Protocol",
           "VCG_DIMENSIONS"]
