"""`moviellm answer`: every question of a benchmark answered once, resumably, into `predictions.jsonl`."""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from moviellm_data import __version__
from moviellm_data.errors import ConfigError

from ..processing_llamavid import iter_video_frames
from .answering import answer_questions, encode_features, encode_frames, prompt_name
from .benchmarks import Benchmark, BenchmarkQuestion, BenchmarkVideo
from .loading import LoadedModel
from .predictions import PredictionsFile, prediction_key
from .settings import GenerationSettings, resolve_qformer_query

__all__ = ["AnswerResult", "answer_benchmark"]


@dataclass
class AnswerResult:
    out: Path
    written: int = 0  # lines written by this run
    skipped: int = 0  # lines an earlier run had written
    videos: int = 0  # videos encoded by this run


def video_seed(seed: int, video_id: str) -> int:
    """The sampling seed of one video: the run's seed mixed with the video id, so resumed runs draw the same."""
    return (seed * 1_000_003 + zlib.crc32(video_id.encode("utf-8"))) % (2**31)


def _encode(loaded: LoadedModel, video: BenchmarkVideo):
    model, processor = loaded.model, loaded.processor
    media = video.load()
    if video.media == "features":
        from safetensors.numpy import load

        try:
            tensors = load(media if isinstance(media, bytes) else Path(media).read_bytes())
        except Exception as error:  # noqa: BLE001 - safetensors raises its own error types
            raise ConfigError(f"the features of {video.video_id} are not a safetensors file ({error}); repack the "
                              "benchmark.") from None
        if "feats" not in tensors:
            raise ConfigError(f"the features of {video.video_id} hold no 'feats' tensor; export them with `moviellm "
                              "export llamavid --model`.")
        return encode_features(model, tensors["feats"], inputs=video.inputs)
    try:
        frames = iter_video_frames(media, fps=processor.video_fps)
        return encode_frames(model, processor, frames, long=video.long, inputs=video.inputs)
    except ValueError as error:
        raise ConfigError(f"video {video.video_id} of the benchmark: {error}") from None


def _asked(questions: list[BenchmarkQuestion]) -> list[tuple[int, str, str]]:
    """(question index, field, text) of every question the model is asked (consistency pairs ask two)."""
    asked = []
    for index, question in enumerate(questions):
        asked.append((index, "prediction", question.question))
        if question.question_2 is not None:
            asked.append((index, "prediction_2", question.question_2))
    return asked


def _limited(benchmark: Benchmark, limit: int | None) -> Iterator[tuple[BenchmarkVideo, list[BenchmarkQuestion]]]:
    """Videos with their questions, only the first `limit` questions of the benchmark (in benchmark order)."""
    left = limit
    for video in benchmark.videos():
        questions = video.questions if left is None else video.questions[:left]
        if questions:
            yield video, questions
        if left is not None:
            left -= len(questions)
            if left <= 0:
                return


def answer_benchmark(
    loaded: LoadedModel,
    benchmark: Benchmark,
    out: str | Path | PredictionsFile,
    settings: GenerationSettings | None = None,
    qformer_query: str | None = None,
    batch_size: int = 8,
    limit: int | None = None,
    cache_implementation: str = "auto",
    progress: bool = True,
) -> AnswerResult:
    """Answer every question of `benchmark` not yet in `out`, one line per question (per pair for consistency).

    Args:
        loaded: from `load_model`.
        benchmark: from `open_benchmark`.
        out: the predictions file (continued when it holds lines of an earlier run of the same settings).
        settings: decoding settings (default greedy); each video samples with a seed derived from `settings.seed`.
        qformer_query: the Q-Former policy; default from the model config, else per video kind (see
            `resolve_qformer_query`).
        batch_size: questions of one video decoded together at most.
        limit: answer only the first `limit` questions of the benchmark.
        cache_implementation: see `CACHE_IMPLEMENTATIONS`.
        progress: draw a progress bar.
    """
    settings = settings or GenerationSettings()
    predictions = out if isinstance(out, PredictionsFile) else PredictionsFile(out)
    done = predictions.done()
    model_record = loaded.record()
    result = AnswerResult(out=predictions.path)
    total = benchmark.total_lines if limit is None else min(limit, benchmark.total_lines or limit)
    checked = False
    bar = tqdm(total=total, desc="answer", unit="question", disable=not progress)
    with bar:
        for video, questions in _limited(benchmark, limit):
            policy = resolve_qformer_query(qformer_query, loaded.model.config, video.long)
            generation = settings.record(policy, prompt_name(video.long))
            if not checked:
                predictions.check_same_run(benchmark.name, model_record, generation)
                checked = True
            pending = [q for q in questions if prediction_key(video.split, q.id) not in done]
            result.skipped += len(questions) - len(pending)
            bar.update(len(questions) - len(pending))
            if not pending:
                continue
            encoded = _encode(loaded, video)
            result.videos += 1
            asked = _asked(pending)
            answers: dict[tuple[int, str], str] = {}

            def save(start: int, texts: list[str], video=video, pending=pending, asked=asked, answers=answers,
                     generation=generation) -> None:
                # called after every decoded batch: a kill loses at most the batch being decoded
                for (index, field, _), text in zip(asked[start : start + len(texts)], texts):
                    answers[(index, field)] = text
                for index, question in enumerate(pending):
                    key = prediction_key(video.split, question.id)
                    complete = (index, "prediction") in answers and (
                        question.question_2 is None or (index, "prediction_2") in answers)
                    if complete and key not in done:
                        predictions.append(_line(benchmark, video, question, answers, index, model_record, generation))
                        done.add(key)
                        result.written += 1
                        bar.update(1)

            answer_questions(loaded.model, loaded.processor, encoded, [text for _, _, text in asked],
                             settings.with_seed(video_seed(settings.seed, video.video_id)), qformer_query=policy,
                             batch_size=batch_size, cache_implementation=cache_implementation, on_batch=save)
            del encoded
    return result


def _line(benchmark: Benchmark, video: BenchmarkVideo, question: BenchmarkQuestion, answers: dict, index: int,
          model: dict, generation: dict) -> dict:
    return {
        "id": question.id,
        "benchmark": benchmark.name,
        "split": video.split,
        "video_id": video.video_id,
        "qa_type": question.qa_type,
        "question": question.question,
        "answer": question.answer,
        "prediction": answers[(index, "prediction")],
        "question_2": question.question_2,
        "prediction_2": answers.get((index, "prediction_2")),
        "model": model,
        "generation": generation,
        "moviellm_version": __version__,
    }
