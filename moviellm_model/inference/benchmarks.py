"""The questions of a benchmark, video by video, from wherever the benchmark is (plain Python, no torch).

`open_benchmark(spec)` accepts:

- a Hub dataset id (`ORG/NAME`) of a benchmark packed by the builders and pushed with `moviellm push`: it is fetched
  into the Hugging Face cache (resumable, `revision` honoured, `HF_ENDPOINT` honoured) and read like a local folder;
- a packed benchmark folder (`moviellm_data.builders.movie_qa_bench.pack_benchmark`, `...video_qa.pack_video_qa`, or
  `moviellm pull` of one): its shards are read with the dataset folder's reader (`moviellm_data.folder.iter_folder`);
- a raw benchmark folder, read with the builders' own source readers: a moviellm dataset folder (movies from
  `moviellm generate`: their overview, plot and temporal QA), a folder in MovieLLM's benchmark format
  (`<name>.json` + video or features), or the raw files of MSVD-QA / MSRVTT-QA (`test_qa.json`), ActivityNet-QA
  (`test_q.json` + `test_a.json`) or the Video-ChatGPT benchmark (`generic_qa.json`, ...). MSVD-QA and MSRVTT-QA
  share a layout: `config` names which one (or the folder's name does).

Every video comes with its questions (ids as in the predictions format: the builders' qa `id`, or
`<movie id>_<k>` for the movie benchmark) and a way to read its media once: an mp4 (bytes or a file) or EVA features.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from moviellm_data.errors import ConfigError

from .hub import hub_snapshot

__all__ = ["Benchmark", "BenchmarkQuestion", "BenchmarkVideo", "CONFIGS", "open_benchmark"]

MOVIE_BENCHMARK = "movie_qa_bench"
_MOVIE_QA_KEYS = ("overview_qa", "plot_qa", "temporal_qa")
#: Raw-folder configurations (the builders' config names), for `config=` / `--config`.
CONFIGS = ("from-movies", "movielm-format", "msvd_qa", "msrvtt_qa", "activitynet_qa", "video_chatgpt")


@dataclass(frozen=True)
class BenchmarkQuestion:
    """One prediction line to write: a question (and, for Video-ChatGPT's consistency split, its second phrasing)."""

    id: str
    qa_type: str
    question: str
    answer: str
    question_2: str | None = None


@dataclass
class BenchmarkVideo:
    """A video (or movie) of a benchmark split and its questions; `load()` reads its media.

    `media` is "video" (`load()` gives the mp4's bytes or its path) or "features" (`load()` gives the bytes of a
    safetensors file holding `feats` [T, 1 + P, C] and the subtitle string in its metadata).
    """

    benchmark: str
    split: str
    video_id: str
    questions: list[BenchmarkQuestion]
    long: bool
    media: str
    load: Callable[[], bytes | Path] = field(repr=False)
    inputs: str | None = None  # movies: `<image>` + subtitle per frame, when the benchmark has them


@dataclass
class Benchmark:
    """An opened benchmark: its name (as recorded in predictions), where it came from and its videos."""

    name: str
    source: str
    videos: Callable[[], Iterator[BenchmarkVideo]] = field(repr=False)
    total_lines: int | None = None  # prediction lines it makes, when known without reading the media


# ------------------------------------------------------------------------------------------------- entries


def _movie_questions(entry: dict) -> list[BenchmarkQuestion]:
    questions = []
    for key in _MOVIE_QA_KEYS:
        for pair in (entry.get("QA") or {}).get(key) or []:
            questions.append(BenchmarkQuestion(id=f"{entry['id']}_{len(questions)}", qa_type=key.removesuffix("_qa"),
                                               question=str(pair["Question"]), answer=str(pair.get("Answer", ""))))
    return questions


def _movie_video(entry: dict, members: dict[str, Any]) -> BenchmarkVideo:
    if "features.safetensors" in members:
        media, blob = "features", members["features.safetensors"]
    elif "mp4" in members:
        media, blob = "video", members["mp4"]
    else:
        raise ConfigError(f"movie {entry.get('id')} carries neither an mp4 nor features; repack the benchmark.")
    return BenchmarkVideo(benchmark=MOVIE_BENCHMARK, split="test", video_id=str(entry["id"]),
                          questions=_movie_questions(entry), long=True, media=media, load=lambda: blob,
                          inputs=entry.get("inputs") or None)


def _short_questions(qa: list[dict]) -> list[BenchmarkQuestion]:
    return [BenchmarkQuestion(id=str(q["id"]), qa_type=str(q.get("category") or ""), question=str(q["question"]),
                              answer=str(q["answer"]), question_2=q.get("question_2")) for q in qa]


def _short_video(benchmark: str, split: str, video_id: str, qa: list[dict], media: bytes | Path) -> BenchmarkVideo:
    return BenchmarkVideo(benchmark=benchmark, split=split, video_id=str(video_id), questions=_short_questions(qa),
                          long=False, media="video", load=lambda: media)


# ------------------------------------------------------------------------------------------------- packed


def _recipe(folder: Path) -> dict:
    from moviellm_data.folder import RECIPE_NAME

    path = folder / RECIPE_NAME
    if not path.is_file():
        return {}
    try:
        recipe = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        return {}
    return recipe if isinstance(recipe, dict) else {}


def _manifest_counts(folder: Path) -> dict[str, int] | None:
    from moviellm_data.folder import MANIFEST_NAME
    from moviellm_data.shards import read_manifest

    entries = read_manifest(folder / MANIFEST_NAME)
    if not entries or any(e.qa is None for e in entries):
        return None
    counts: dict[str, int] = {}
    for entry in entries:
        prefix = entry.shard.rsplit("-", 1)[0]
        counts[prefix] = counts.get(prefix, 0) + sum(entry.qa.values())
    return counts


def _packed_movie_benchmark(folder: Path, source: str) -> Benchmark:
    from moviellm_data.folder import iter_folder
    from moviellm_data.builders.movie_qa_bench import PREFIX

    def videos() -> Iterator[BenchmarkVideo]:
        for _, _, members in iter_folder(folder, PREFIX + "-"):
            yield _movie_video(members["json"], members)

    counts = _manifest_counts(folder) or {}
    return Benchmark(name=MOVIE_BENCHMARK, source=source, videos=videos, total_lines=counts.get(PREFIX))


def _packed_video_qa(folder: Path, name: str, source: str, splits: tuple[str, ...]) -> Benchmark:
    from moviellm_data.folder import iter_folder

    def videos() -> Iterator[BenchmarkVideo]:
        for split in splits:
            for _, _, members in iter_folder(folder, f"{split}-"):
                entry = members["json"]
                yield _short_video(entry.get("dataset") or name, split, entry["video_id"], entry["qa"], members["mp4"])

    counts = _manifest_counts(folder)
    total = sum(counts.get(split, 0) for split in splits) if counts else None
    return Benchmark(name=name, source=source, videos=videos, total_lines=total)


def _open_packed(folder: Path, source: str, split: str | None) -> Benchmark | None:
    """A folder packed by the builders (or pulled from the Hub), recognised by its recipe or its shard names."""
    from moviellm_data.builders.movie_qa_bench import KIND as MOVIE_KIND
    from moviellm_data.builders.movie_qa_bench import PREFIX
    from moviellm_data.builders.video_qa import BENCHMARKS
    from moviellm_data.builders.video_qa import KIND as VIDEO_QA_KIND

    recipe = _recipe(folder)
    kind = recipe.get("kind")
    if kind == MOVIE_KIND or (kind is None and any(folder.glob(f"{PREFIX}-*.tar"))):
        if split not in (None, "test"):
            raise ConfigError(f"the movie benchmark has only the split test, not {split!r}.")
        return _packed_movie_benchmark(folder, source)
    name = (recipe.get("source") or {}).get("benchmark") if kind == VIDEO_QA_KIND else None
    if kind is None:  # e.g. a pulled folder without its recipe: the split names tell the benchmark
        for candidate, info in BENCHMARKS.items():
            if info.splits != ("test",) and all(any(folder.glob(f"{s}-*.tar")) for s in info.splits):
                name = candidate
        if name is None and any(folder.glob("test-*.tar")):
            name = _first_dataset_name(folder)
    if name is None:
        return None
    if name not in BENCHMARKS:
        raise ConfigError(f"{source} is a packed {name!r} benchmark, which this version cannot answer; choose one of "
                          f"{', '.join([MOVIE_BENCHMARK, *BENCHMARKS])}.")
    splits = BENCHMARKS[name].splits
    if split is not None:
        if split not in splits:
            raise ConfigError(f"{name} has the splits {', '.join(splits)}, not {split!r}.")
        splits = (split,)
    return _packed_video_qa(folder, name, source, splits)


def _first_dataset_name(folder: Path) -> str | None:
    from moviellm_data.folder import iter_folder

    for _, _, members in iter_folder(folder, "test-"):
        return members["json"].get("dataset")
    return None


# ---------------------------------------------------------------------------------------------------- raw


def _raw_kind(folder: Path, config: str | None) -> str | None:
    if config is not None:
        if config not in CONFIGS:
            raise ConfigError(f"--config must be one of {', '.join(CONFIGS)}, not {config!r}.")
        return config
    if (folder / "test_qa.json").is_file():
        lowered = folder.resolve().as_posix().lower()
        found = [name for name in ("msrvtt", "msvd") if name in lowered]
        if len(found) != 1:
            raise ConfigError(f"{folder} holds test_qa.json, the layout of both MSVD-QA and MSRVTT-QA; say which with "
                              "--config msvd_qa or --config msrvtt_qa.")
        return f"{found[0]}_qa"
    if (folder / "test_q.json").is_file():
        return "activitynet_qa"
    if (folder / "generic_qa.json").is_file() or (folder / "consistency_qa.json").is_file():
        return "video_chatgpt"
    if any(folder.glob("movies-*.tar")) or any(folder.glob("*.tar")):
        return "from-movies"
    if any(folder.glob("*.json")):
        return "movielm-format"
    return None


def _open_raw(folder: Path, config: str | None, split: str | None, legacy_pickle: bool) -> Benchmark | None:
    kind = _raw_kind(folder, config)
    if kind is None:
        return None
    source = str(folder)
    if kind == "from-movies":
        from moviellm_data.builders.movie_qa_bench import records_from_movies

        def videos() -> Iterator[BenchmarkVideo]:
            for _, entry, members in records_from_movies(folder):
                yield _movie_video(entry, members)

        return Benchmark(name=MOVIE_BENCHMARK, source=source, videos=videos)
    if kind == "movielm-format":
        from moviellm_data.builders.movie_qa_bench import movielm_plan, records_from_movielm_folder

        media = "features" if any(folder.glob("*.safetensors")) or any(folder.glob("*.pkl")) else "video"
        plan = movielm_plan(folder, media, legacy_pickle)  # checks every entry and file first

        def videos() -> Iterator[BenchmarkVideo]:
            for _, entry, members in records_from_movielm_folder(folder, media, legacy_pickle):
                yield _movie_video(entry, members)

        total = sum(len(_movie_questions(entry)) for _, entry, _ in plan)
        return Benchmark(name=MOVIE_BENCHMARK, source=source, videos=videos, total_lines=total)
    from moviellm_data.builders.video_qa import BENCHMARKS, plan

    splits = BENCHMARKS[kind].splits
    if split is not None:
        if split not in splits:
            raise ConfigError(f"{kind} has the splits {', '.join(splits)}, not {split!r}.")
        splits = (split,)
    plans = {s: plan(kind, folder, s) for s in splits}  # checks the QA files and that every video is there

    def short_videos() -> Iterator[BenchmarkVideo]:
        for s, found in plans.items():
            for video_id, path, questions in found:
                yield _short_video(kind, s, video_id, questions, Path(path))

    total = sum(len(questions) for found in plans.values() for _, _, questions in found)
    return Benchmark(name=kind, source=source, videos=short_videos, total_lines=total)


# -------------------------------------------------------------------------------------------------- entry


def open_benchmark(spec: str, config: str | None = None, split: str | None = None, revision: str | None = None,
                   legacy_pickle: bool = False) -> Benchmark:
    """Open a benchmark by Hub id or folder (see the module docstring); raises `ConfigError` with one sentence.

    Args:
        spec: `ORG/NAME` on the Hub, or a folder.
        config: for raw folders, the builder configuration (see `CONFIGS`) when the layout does not tell it.
        split: answer only this split (default: all of the benchmark's splits).
        revision: branch, tag or commit of a Hub dataset.
        legacy_pickle: allow the original `.pkl` features of a MovieLLM-format folder (pickle can run code).
    """
    text = str(spec).strip()
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ConfigError(f"--benchmark {text} is a file; give the benchmark's folder (or a Hub dataset id ORG/NAME).")
        opened = None if config else _open_packed(path, str(path), split)
        opened = opened or _open_raw(path, config, split, legacy_pickle)
        if opened is None:
            raise ConfigError(f"{text} is neither a packed benchmark nor a raw benchmark folder the builders read "
                              "(movies, MovieLLM format, MSVD/MSRVTT/ActivityNet-QA or Video-ChatGPT files).")
        return opened
    if text.startswith((".", "/", "~")) or text.count("/") != 1 or not all(text.split("/")):
        raise ConfigError(f"benchmark {text} is neither an existing folder nor a Hub dataset id (ORG/NAME); check "
                          "the path or the name.")
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(text)
    except HFValidationError:
        raise ConfigError(f"benchmark {text} is neither an existing folder nor a valid Hub dataset id.") from None
    folder = hub_snapshot(text, "dataset", revision)
    opened = _open_packed(folder, text, split)
    if opened is None:
        raise ConfigError(f"dataset {text} is not a benchmark packed by moviellm (no bench-*.tar or split shards); "
                          "pack it with the builders and push it with `moviellm push`.")
    return opened
