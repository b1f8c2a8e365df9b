"""``datasets`` builder of the short-video QA benchmarks LLaMA-VID reports, from their public raw files.

Configs and the raw layout each expects in ``data_dir`` (as distributed, llamavid-spec.md section 6.1):

- ``msvd_qa`` / ``msrvtt_qa``: ``test_qa.json`` = [{"video_id", "question", "id", "answer"}], videos
  ``<video_dir>/<video_id>.<ext>``;
- ``activitynet_qa``: ``test_q.json`` = [{"video_name", "question_id", "question"}] and ``test_a.json``
  = [{"answer", ...}] aligned by index, videos ``<video_dir>/v_<video_name>.<ext>``;
- ``video_chatgpt``: ``generic_qa.json`` and ``temporal_qa.json`` = [{"video_name", "Q", "A"}],
  ``consistency_qa.json`` = [{"video_name", "Q1", "Q2", "A"}], videos ``<video_dir>/<video_name>.<ext>``;
  three splits: generic, temporal, consistency.

``video_dir`` defaults to ``data_dir/videos`` when that exists, else ``data_dir``. Extensions tried: mp4,
avi, mov, mkv, webm; videos that are not mp4 are re-encoded to H.264 mp4 (same frames and frame rate),
so every sample has the same members.

One sample per video: ``<key>.json`` = {"dataset", "video_id", "qa": [{"id", "question", "answer",
"question_2", "category"}]} and ``<key>.mp4``. :func:`pack_video_qa` writes a publishable folder (shards
``<split>-NNNNN.tar``, manifest, ``pipeline.yaml``, card) for ``moviellm push``, so evaluation can read the
benchmark with ``load_dataset("org/msvd-qa", split="test")``.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import datasets
from datasets.builder import Key

from ..card import human_bytes, hub_metadata, write_folder_card
from ..errors import ConfigError, ShardError
from ..folder import DEFAULT_SHARD_BYTES, MANIFEST_NAME, iter_folder, pack_samples, prepare_folder, read_recipe
from ..shards import read_manifest, safe_key
from ..video import encode_mp4

KIND = "video_qa"
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")


@dataclass(frozen=True)
class Benchmark:
    """A short-video QA benchmark: its config name, the name it is published under, what it measures, its splits."""

    name: str
    pretty_name: str
    description: str
    splits: tuple[str, ...] = ("test",)


BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (
    Benchmark("msvd_qa", "MSVD-QA", "open-ended QA on MSVD clips (accuracy and 0-5 score by a GPT judge)"),
    Benchmark("msrvtt_qa", "MSRVTT-QA", "open-ended QA on MSR-VTT clips (accuracy and score by a GPT judge)"),
    Benchmark("activitynet_qa", "ActivityNet-QA", "open-ended QA on ActivityNet videos (accuracy and score)"),
    Benchmark("video_chatgpt", "Video-ChatGPT benchmark",
              "generation quality: correctness, detail, context (generic), temporal, consistency; GPT-judged 0-5",
              splits=("generic", "temporal", "consistency")),
)}

_VERSION = datasets.Version("1.0.0")


def video_qa_features() -> datasets.Features:
    qa = {"id": datasets.Value("string"), "question": datasets.Value("string"), "answer": datasets.Value("string"),
          "question_2": datasets.Value("string"), "category": datasets.Value("string")}
    return datasets.Features({
        "__key__": datasets.Value("string"),
        "__url__": datasets.Value("string"),
        "json": {"dataset": datasets.Value("string"), "video_id": datasets.Value("string"), "qa": datasets.List(qa)},
        "mp4": datasets.Video(),
    })


# -------------------------------------------------------------------------------------------- videos


def video_as_mp4(path: str | Path) -> bytes:
    """The video's bytes when it is an mp4; otherwise its frames re-encoded as H.264 mp4 at its frame rate."""
    path = Path(path)
    if path.suffix.lower() == ".mp4":
        return path.read_bytes()
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or Fraction(25)
            fps = max(1, round(float(rate)))

            def frames():
                for frame in container.decode(stream):
                    array = frame.to_ndarray(format="rgb24")
                    height, width = array.shape[0] // 2 * 2, array.shape[1] // 2 * 2  # 4:2:0 needs even sizes
                    yield array[:height, :width]

            return encode_mp4(frames(), fps=fps, crf=18)
    except (av.error.FFmpegError, IndexError, ValueError) as err:
        raise ShardError(f"{path} is not a readable video ({err}); replace it with the file as distributed.") from None


def _find_video(video_dir: Path, name: str) -> Path | None:
    for suffix in VIDEO_SUFFIXES:
        candidate = video_dir / f"{name}{suffix}"
        if candidate.exists():
            return candidate
    return None


# -------------------------------------------------------------------------------------- raw QA files


def _load_json(path: Path) -> list:
    if not path.exists():
        raise ConfigError(f"{path} does not exist; give data_dir=<the folder with the benchmark's QA files as distributed>.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path} is not JSON ({err}); restore the file as distributed.") from None
    if not isinstance(data, list):
        raise ConfigError(f"{path} should hold a list of QA entries; restore the file as distributed.")
    return data


def _qa(id_, question, answer, question_2=None, category=None) -> dict:
    return {"id": str(id_), "question": str(question), "answer": str(answer),
            "question_2": None if question_2 is None else str(question_2),
            "category": None if category is None else str(category)}


def raw_questions(benchmark: str, data_dir: Path, split: str) -> list[tuple[str, str, dict]]:
    """``(video id, video file stem, qa)`` from a benchmark's raw JSON files, in file order."""
    try:
        if benchmark in ("msvd_qa", "msrvtt_qa"):
            return [(str(q["video_id"]), str(q["video_id"]), _qa(q["id"], q["question"], q["answer"]))
                    for q in _load_json(data_dir / "test_qa.json")]
        if benchmark == "activitynet_qa":
            questions, answers = _load_json(data_dir / "test_q.json"), _load_json(data_dir / "test_a.json")
            if len(questions) != len(answers):
                raise ConfigError(f"test_q.json has {len(questions)} questions but test_a.json {len(answers)} answers; "
                                  "they must align by index as distributed.")
            return [(str(q["video_name"]), f"v_{q['video_name']}",
                     _qa(q["question_id"], q["question"], a["answer"], category=a.get("type")))
                    for q, a in zip(questions, answers, strict=True)]
        if benchmark == "video_chatgpt":
            rows = _load_json(data_dir / f"{split}_qa.json")
            if split == "consistency":
                return [(str(r["video_name"]), str(r["video_name"]), _qa(f"{r['video_name']}_{i}", r["Q1"], r["A"], r["Q2"]))
                        for i, r in enumerate(rows)]
            return [(str(r["video_name"]), str(r["video_name"]), _qa(f"{r['video_name']}_{i}", r["Q"], r["A"]))
                    for i, r in enumerate(rows)]
    except (KeyError, TypeError) as err:
        raise ConfigError(f"the {benchmark} QA files in {data_dir} lack the field {err} that the distributed files "
                          "have; restore them as distributed.") from None
    raise ConfigError(f"unknown benchmark {benchmark!r}; choose one of {', '.join(BENCHMARKS)}.")


def plan(benchmark: str, data_dir: str | Path, split: str, video_dir: str | Path | None = None,
         skip_missing: bool = False) -> list[tuple[str, Path, list[dict]]]:
    """``(video id, video file, questions)`` per video, in order of first appearance; checks every file exists."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise ConfigError(f"{data_dir} does not exist; give data_dir=<the folder with the raw {benchmark} files>.")
    if split not in BENCHMARKS[benchmark].splits:
        raise ConfigError(f"{benchmark} has the splits {', '.join(BENCHMARKS[benchmark].splits)}, not {split!r}.")
    video_dir = Path(video_dir) if video_dir else (data_dir / "videos" if (data_dir / "videos").is_dir() else data_dir)
    grouped: OrderedDict[str, tuple[str, list[dict]]] = OrderedDict()
    for video_id, stem, qa in raw_questions(benchmark, data_dir, split):
        grouped.setdefault(video_id, (stem, []))[1].append(qa)
    found = []
    for video_id, (stem, questions) in grouped.items():
        path = _find_video(video_dir, stem)
        if path is None:
            if skip_missing:
                continue
            raise ConfigError(f"video {stem} of {benchmark} is not in {video_dir} (tried {', '.join(VIDEO_SUFFIXES)}); "
                              "add it, or pass skip_missing=True to leave its questions out.")
        found.append((video_id, path, questions))
    return found


def records(benchmark: str, data_dir: str | Path, split: str, video_dir: str | Path | None = None,
            skip_missing: bool = False) -> Iterator[tuple[str, dict, dict[str, bytes]]]:
    """``(key, entry, {"mp4": bytes})`` per video, its questions grouped, in order of first appearance."""
    for video_id, path, questions in plan(benchmark, data_dir, split, video_dir, skip_missing):
        entry = {"dataset": benchmark, "video_id": video_id, "qa": questions}
        yield safe_key(video_id), entry, {"mp4": video_as_mp4(path)}


# ------------------------------------------------------------------------------------------- packing


def _count_qa(members: dict) -> dict[str, int]:
    return {"qa": len(json.loads(members["json"])["qa"])}


def pack_video_qa(benchmark: str, data_dir: str | Path, out: str | Path, video_dir: str | Path | None = None,
                  skip_missing: bool = False, shard_bytes: int = DEFAULT_SHARD_BYTES) -> Path:
    """Convert a benchmark's raw files into a publishable folder (``<split>-NNNNN.tar``, manifest, recipe, card)."""
    if benchmark not in BENCHMARKS:
        raise ConfigError(f"unknown benchmark {benchmark!r}; choose one of {', '.join(BENCHMARKS)}.")
    out = Path(out)
    source = {"benchmark": benchmark, "data_dir": str(Path(data_dir).resolve()),
              "video_dir": str(Path(video_dir).resolve()) if video_dir else None, "skip_missing": skip_missing}
    for split in BENCHMARKS[benchmark].splits:  # check the QA files and videos before anything is written
        plan(benchmark, data_dir, split, video_dir, skip_missing)
    folder = prepare_folder(out, KIND, source)
    for split in BENCHMARKS[benchmark].splits:
        samples = ((key, {"json": json.dumps(entry, ensure_ascii=False).encode(), **members})
                   for key, entry, members in records(benchmark, data_dir, split, video_dir, skip_missing))
        pack_samples(folder, samples, split, shard_bytes, _count_qa)
    write_card(out)
    return out


def write_card(root: str | Path, repo_id: str | None = None) -> Path:
    """The card of a packed benchmark folder (called by ``moviellm push`` with the repository id)."""
    root = Path(root)
    recipe = read_recipe(root)
    benchmark = BENCHMARKS[(recipe.get("source") or {}).get("benchmark", "msvd_qa")]
    entries = read_manifest(root / MANIFEST_NAME)
    splits = {split: [e for e in entries if e.shard.startswith(f"{split}-")] for split in benchmark.splits}
    questions = sum((e.qa or {}).get("qa", 0) for e in entries)
    metadata = hub_metadata(
        f"{benchmark.pretty_name} (moviellm shards)", video_qa_features(), splits,
        {split: f"{split}-*.tar" for split in benchmark.splits},
        tags=["video", "question-answering", "benchmark", "webdataset", "moviellm", benchmark.name], size=questions,
    )
    rows = [(f"{s} split", f"{len(m)} videos, {sum((e.qa or {}).get('qa', 0) for e in m)} questions")
            for s, m in splits.items()]
    rows.append(("size", human_bytes(sum(e.bytes for e in entries))))
    return write_folder_card(root, "video_qa_card.md", metadata, rows, repo_id, pretty_name=benchmark.pretty_name,
                             description=benchmark.description, first_split=benchmark.splits[0],
                             source=json.dumps(recipe.get("source") or {}, ensure_ascii=False))


# ------------------------------------------------------------------------------------------- builder


@dataclass
class VideoQAConfig(datasets.BuilderConfig):
    """Args:
        video_dir: where the videos are (default ``data_dir/videos`` or ``data_dir``).
        skip_missing: leave out the questions of videos that are missing instead of stopping.
    """

    video_dir: str | None = None
    skip_missing: bool = False


class VideoQA(datasets.GeneratorBasedBuilder):
    """MSVD-QA, MSRVTT-QA, ActivityNet-QA and the Video-ChatGPT benchmark, one sample per video."""

    BUILDER_CONFIG_CLASS = VideoQAConfig
    VERSION = _VERSION
    BUILDER_CONFIGS = [VideoQAConfig(name=b.name, version=_VERSION, description=b.description) for b in BENCHMARKS.values()]
    DEFAULT_CONFIG_NAME = "msvd_qa"

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(description=self.config.description, features=video_qa_features())

    def _split_generators(self, dl_manager):
        if not self.config.data_dir:
            raise ConfigError(f"give data_dir=<the folder with the raw {self.config.name} files>.")
        return [datasets.SplitGenerator(name=split, gen_kwargs={"split": split})
                for split in BENCHMARKS[self.config.name].splits]

    def _generate_examples(self, split):
        found = records(self.config.name, self.config.data_dir, split, self.config.video_dir, self.config.skip_missing)
        for index, (key, entry, members) in enumerate(found):
            yield Key(0, index), {"__key__": key, "__url__": str(self.config.data_dir), "json": entry,
                                  "mp4": {"bytes": members["mp4"], "path": f"{key}.mp4"}}


def read_packed(folder: str | Path, split: str = "test") -> Iterator[dict]:
    """Entries of a packed folder's split (what evaluation reads after ``moviellm pull``)."""
    for _, _, members in iter_folder(Path(folder), f"{split}-"):
        yield members["json"]


__all__ = ["BENCHMARKS", "VideoQA", "pack_video_qa", "plan", "raw_questions", "read_packed", "records", "video_as_mp4",
           "video_qa_features", "write_card"]
