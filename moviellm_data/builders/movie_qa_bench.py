"""``datasets`` builder of the long-video QA benchmark (MovieLLM format: overview, plot and temporal QA).

Two sources:

- ``from-movies``: a moviellm dataset folder; each movie gives the benchmark entry of
  :meth:`MovieScript.to_benchmark_json` (1 overview, 2 plot, 1 temporal pair), with the frame span each
  answer rests on, the per-frame ``inputs`` string (``<image>`` + subtitle per frame) and the movie's mp4;
- ``movielm-format``: a folder as MovieLLM distributes its benchmark: one ``<name>.json`` per movie
  ({"movie_title", "QA": {"overview_qa": [{"Question", "Answer"}], "plot_qa": [...], "temporal_qa": [...]}})
  next to its video (``<name>.mp4``/``.mkv``/``.avi``/``.mov``, stored as mp4) or its features
  (``<name>.safetensors`` from ``moviellm export llamavid``, or the original ``<name>.pkl`` with
  ``legacy_pickle=True`` only, converted to safetensors).

``media`` picks what every sample carries: ``"video"`` (member ``mp4``) or ``"features"`` (member
``features.safetensors``: ``feats`` float16 [T, 257, 1408] and the ``inputs`` string in its metadata).

Usage::

    MovieQABench(config_name="from-movies", data_dir="movies/", cache_dir=...).download_and_prepare()
    pack_benchmark("from-movies", "movies/", "bench/")       # a folder for `moviellm push bench --repo org/name`
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
from datasets.builder import Key

from ..card import human_bytes, hub_metadata, write_folder_card
from ..errors import ConfigError, ScriptValidationError
from ..export import movie_inputs
from ..folder import DEFAULT_SHARD_BYTES, MANIFEST_NAME, iter_folder, pack_samples, prepare_folder, read_recipe
from ..shards import read_manifest, read_movies, safe_key

from .video_qa import video_as_mp4

KIND = "movie_qa_bench"
PREFIX = "bench"
QA_KEYS = ("overview_qa", "plot_qa", "temporal_qa")
VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm")

_VERSION = datasets.Version("1.0.0")


def bench_features(media: str = "video") -> datasets.Features:
    """Features of one benchmark sample as ``load_dataset`` reads the packed shards."""
    pair = {"Question": datasets.Value("string"), "Answer": datasets.Value("string"),
            "evidence": datasets.List(datasets.Value("int64"))}
    features = {
        "__key__": datasets.Value("string"),
        "__url__": datasets.Value("string"),
        "json": {
            "id": datasets.Value("string"),
            "movie_title": datasets.Value("string"),
            "source": datasets.Value("string"),
            "num_frames": datasets.Value("int64"),
            "inputs": datasets.Value("string"),
            "QA": {k: datasets.List(pair) for k in QA_KEYS},
        },
    }
    if media == "video":
        features["mp4"] = datasets.Video()
    else:
        features["features.safetensors"] = datasets.Value("binary")
    return datasets.Features(features)


# ------------------------------------------------------------------------------------------- sources


def records_from_movies(folder: Path, media: str = "video") -> Iterator[tuple[str, dict, dict[str, bytes]]]:
    """``(key, entry, members)`` for every movie of a moviellm dataset folder."""
    if media != "video":
        raise ConfigError("from-movies benchmarks carry the movies' videos; export features with "
                          "`moviellm export llamavid` and build from that folder in movielm-format instead.")
    for script, mp4 in read_movies(folder, decode=False):
        try:
            entry = script.to_benchmark_json()
        except ScriptValidationError as err:
            raise ConfigError(f"{err} Generate movies whose writer makes overview, plot and temporal QA.") from None
        picked = {"overview_qa": ("overview", 1), "plot_qa": ("plot", 2), "temporal_qa": ("temporal", 1)}
        for name, (kind, count) in picked.items():
            pairs = [q for q in script.qa if q.type == kind][:count]
            for item, qa in zip(entry["QA"][name], pairs, strict=True):
                item["evidence"] = [qa.evidence.start, qa.evidence.end]
        entry = {"id": script.id, "movie_title": entry["movie_title"], "source": "moviellm",
                 "num_frames": script.num_frames, "inputs": movie_inputs(script), "QA": entry["QA"]}
        yield script.id, entry, {"mp4": mp4}


def movielm_plan(folder: Path, media: str = "video", legacy_pickle: bool = False,
                 video_dir: Path | None = None) -> list[tuple[str, dict, Path]]:
    """``(stem, entry, media file)`` for every ``<name>.json`` of a MovieLLM benchmark folder; checks them all."""
    folder = Path(folder)
    video_dir = Path(video_dir) if video_dir else folder
    files = sorted(p for p in folder.glob("*.json"))
    if not files:
        raise ConfigError(f"{folder} holds no <movie>.json benchmark files; give the folder of MovieLLM's benchmark.")
    plan = []
    for path in files:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            qa = {k: [{"Question": str(p["Question"]), "Answer": str(p.get("Answer", "")), "evidence": []}
                      for p in data["QA"].get(k, [])] for k in QA_KEYS}
            title = str(data["movie_title"])
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise ConfigError(f"{path} is not a MovieLLM benchmark entry ({type(err).__name__}: {err}); it needs "
                              "movie_title and QA.overview_qa/plot_qa/temporal_qa lists of Question/Answer.") from None
        stem = path.stem
        entry = {"id": stem, "movie_title": title, "source": "movielm-format", "num_frames": None, "inputs": None, "QA": qa}
        if media == "video":
            found = next((video_dir / f"{stem}{s}" for s in VIDEO_SUFFIXES if (video_dir / f"{stem}{s}").exists()), None)
            if found is None:
                raise ConfigError(f"no video for {path.name} in {video_dir} (looked for {stem}.mp4/.mkv/.avi/.mov/.webm); "
                                  "add it, or build with media='features'.")
        else:
            found = video_dir / f"{stem}.safetensors"
            if not found.exists():
                found = video_dir / f"{stem}.pkl"
                if not found.exists():
                    raise ConfigError(f"no features for {stem} in {video_dir} (looked for {stem}.safetensors and {stem}.pkl).")
                if not legacy_pickle:
                    raise ConfigError(f"{found} is a pickle, which can run code when loaded; pass legacy_pickle=True only "
                                      "if you trust where it came from, or convert it with moviellm export.")
        plan.append((stem, entry, found))
    return plan


def records_from_movielm_folder(folder: Path, media: str = "video", legacy_pickle: bool = False,
                                video_dir: Path | None = None) -> Iterator[tuple[str, dict, dict[str, bytes]]]:
    """``(key, entry, members)`` for every ``<name>.json`` of a folder in MovieLLM's benchmark format."""
    for stem, entry, found in movielm_plan(folder, media, legacy_pickle, video_dir):
        if media == "video":
            members = {"mp4": video_as_mp4(found)}
        else:
            feats, inputs = _features_of(found)
            entry["num_frames"], entry["inputs"] = int(feats.shape[0]), inputs
            members = {"features.safetensors": _features_bytes(feats, inputs, stem)}
        yield safe_key(stem), entry, members


def _features_of(path: Path) -> tuple[np.ndarray, str | None]:
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as fh:
            return fh.get_tensor("feats"), (fh.metadata() or {}).get("inputs")
    with open(path, "rb") as fh:  # a .pkl: movielm_plan let it through only with legacy_pickle=True
        data = pickle.load(fh)  # noqa: S301
    return np.asarray(data["feats"], dtype=np.float16), data.get("inputs")


def _features_bytes(feats: np.ndarray, inputs: str | None, movie_id: str) -> bytes:
    from safetensors.numpy import save

    return save({"feats": np.ascontiguousarray(feats, dtype=np.float16)},
                metadata={"movie_id": movie_id, "inputs": inputs or "", "num_frames": str(len(feats))})


def _records(source: str, data_dir: Path, media: str, legacy_pickle: bool, video_dir: Path | None):
    if not Path(data_dir).exists():
        raise ConfigError(f"{data_dir} does not exist; give data_dir=<the source folder>.")
    if source == "from-movies":
        return records_from_movies(Path(data_dir), media)
    if source == "movielm-format":
        return records_from_movielm_folder(Path(data_dir), media, legacy_pickle, video_dir)
    raise ConfigError(f"unknown benchmark source {source!r}; use from-movies or movielm-format.")


# ------------------------------------------------------------------------------------------- packing


def _count_qa(members: dict) -> dict[str, int]:
    entry = json.loads(members["json"])
    return {k.removesuffix("_qa"): len(v) for k, v in entry["QA"].items()}


def pack_benchmark(source: str, data_dir: str | Path, out: str | Path, media: str = "video", legacy_pickle: bool = False,
                   video_dir: str | Path | None = None, shard_bytes: int = DEFAULT_SHARD_BYTES) -> Path:
    """Write the benchmark as a publishable folder (shards, manifest, ``pipeline.yaml``, card); rerun continues."""
    out = Path(out)
    records = _records(source, Path(data_dir), media, legacy_pickle, Path(video_dir) if video_dir else None)
    if source == "movielm-format":  # check every entry and file before anything is written
        movielm_plan(Path(data_dir), media, legacy_pickle, Path(video_dir) if video_dir else None)
    folder = prepare_folder(out, KIND, {"source": source, "data_dir": str(Path(data_dir).resolve()), "media": media})
    samples = ((key, {"json": json.dumps(entry, ensure_ascii=False).encode(), **members})
               for key, entry, members in records)
    pack_samples(folder, samples, PREFIX, shard_bytes, _count_qa)
    write_card(out)
    return out


def write_card(root: str | Path, repo_id: str | None = None) -> Path:
    """The card of a packed benchmark folder (called by ``moviellm push`` with the repository id)."""
    root = Path(root)
    entries = read_manifest(root / MANIFEST_NAME)
    recipe = read_recipe(root)
    media = (recipe.get("source") or {}).get("media", "video")
    counts: dict[str, int] = {}
    for e in entries:
        for k, v in (e.qa or {}).items():
            counts[k] = counts.get(k, 0) + v
    metadata = hub_metadata(
        "Long-video QA benchmark (MovieLLM format)", bench_features(media), {"test": entries},
        {"test": f"{PREFIX}-*.tar"}, tags=["video", "long-video", "question-answering", "benchmark", "moviellm",
                                          "webdataset"],
        size=len(entries), license="cc-by-4.0",
    )
    rows = [("movies", len(entries)), ("QA pairs", ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"),
            ("media", "mp4 video per movie" if media == "video" else "EVA features per movie (safetensors)"),
            ("size", human_bytes(sum(e.bytes for e in entries)))]
    return write_folder_card(root, "qa_bench_card.md", metadata, rows, repo_id,
                             media_column="mp4" if media == "video" else "features.safetensors",
                             # Reading a row decodes every column: without torchcodec, the mp4 must be cast first.
                             media_cast=("\nbench = bench.cast_column(\"mp4\", Video(decode=False))  # mp4 bytes; drop "
                                         "this line when torchcodec is installed" if media == "video" else ""),
                             source=json.dumps(recipe.get("source") or {}, ensure_ascii=False))


# ------------------------------------------------------------------------------------------- builder


@dataclass
class MovieQABenchConfig(datasets.BuilderConfig):
    """Args:
        media: "video" (mp4 per movie) or "features" (EVA features per movie).
        legacy_pickle: allow reading the original ``.pkl`` features (they can run code when loaded).
        video_dir: where the videos/features are, when not next to the JSON files.
    """

    media: str = "video"
    legacy_pickle: bool = False
    video_dir: str | None = None


class MovieQABench(datasets.GeneratorBasedBuilder):
    """The MovieLLM long-video QA benchmark: 1 overview, 2 plot and 1 temporal QA pair per movie."""

    BUILDER_CONFIG_CLASS = MovieQABenchConfig
    VERSION = _VERSION
    BUILDER_CONFIGS = [
        MovieQABenchConfig(name="from-movies", version=_VERSION, description="from a moviellm dataset folder"),
        MovieQABenchConfig(name="movielm-format", version=_VERSION,
                           description="from a folder in MovieLLM's benchmark format with videos or features"),
    ]
    DEFAULT_CONFIG_NAME = "from-movies"

    def _info(self) -> datasets.DatasetInfo:
        if self.config.media not in ("video", "features"):
            raise ConfigError(f"media must be video or features, got {self.config.media!r}.")
        return datasets.DatasetInfo(description=self.config.description, features=bench_features(self.config.media))

    def _split_generators(self, dl_manager):
        if not self.config.data_dir:
            raise ConfigError("give data_dir=<the source folder> (a moviellm dataset or a MovieLLM benchmark folder).")
        return [datasets.SplitGenerator(name=datasets.Split.TEST, gen_kwargs={"data_dir": self.config.data_dir})]

    def _generate_examples(self, data_dir):
        records = _records(self.config.name, Path(data_dir), self.config.media, self.config.legacy_pickle,
                           Path(self.config.video_dir) if self.config.video_dir else None)
        for index, (key, entry, members) in enumerate(records):
            example = {"__key__": key, "__url__": str(data_dir), "json": entry}
            if "mp4" in members:
                example["mp4"] = {"bytes": members["mp4"], "path": f"{key}.mp4"}
            else:
                example["features.safetensors"] = members["features.safetensors"]
            yield Key(0, index), example


def read_packed(folder: str | Path) -> Iterator[dict]:
    """Benchmark entries of a packed folder (what evaluation reads after ``moviellm pull``)."""
    for _, _, members in iter_folder(Path(folder), PREFIX):
        yield members["json"]


__all__ = ["MovieQABench", "bench_features", "movielm_plan", "pack_benchmark", "read_packed", "records_from_movielm_folder",
           "records_from_movies", "write_card"]
