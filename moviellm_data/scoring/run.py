"""Scoring a dataset folder: every movie's keyframes through the models, scores written beside the data.

``DIR/scores.jsonl`` gets one line per movie (appended and flushed as each movie is scored, so a killed run
continues where it stopped with the same command), ``DIR/scores.json`` the dataset summary, which the dataset card
shows. A file scored with other models is never mixed with new scores: it is refused, or replaced with ``rescore``.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import ConfigError, ShardError
from ..fileio import atomic_write_text
from ..folder import MANIFEST_NAME, MOVIE_SCORES_NAME, SCORES_NAME, dataset_kind, now
from ..renderers.frame_prompts import replace_names
from ..renderers.portraits import MEMBER as PORTRAITS_MEMBER
from ..renderers.portraits import read_portraits
from ..script import MovieScript
from ..shards import iter_tar_samples, read_manifest, resolve_shards
from ..video import iter_mp4_frames
from .metrics import movie_scores, summarize

logger = logging.getLogger(__name__)

DEFAULT_CLIP_MODEL = "openai/clip-vit-large-patch14"
FORMAT = "moviellm-scores-v1"
STYLE_DESCRIPTOR = "channel mean and std of the middle layer's patch tokens"


@dataclass(frozen=True)
class ScoreSettings:
    """Which models score, and how they run.

    Args:
        clip_model: a CLIP-like text-image model (Hub id or folder) for prompt alignment.
        consistency_model: an image model for character and style consistency (e.g. ``facebook/dinov2-base``);
            None: the CLIP model's image tower.
        batch_size: keyframes per forward pass.
        device: ``cuda``, ``cpu``...; None: CUDA when available.
    """

    clip_model: str = DEFAULT_CLIP_MODEL
    consistency_model: str | None = None
    batch_size: int = 64
    device: str | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, got {self.batch_size}.")

    def models(self) -> dict:
        """What decides the numbers (recorded with every score; scores of other models are never mixed)."""
        return {"clip": self.clip_model, "consistency": self.consistency_model or self.clip_model,
                "style": STYLE_DESCRIPTOR}


class Scorer:
    """The models, loaded on first use (a folder with nothing left to score loads none), scoring one movie at a time."""

    def __init__(self, settings: ScoreSettings) -> None:
        self.settings = settings
        self.clip = None
        self.consistency = None

    def load(self) -> Scorer:
        """Load the models (idempotent); a wrong model is one sentence (:class:`ConfigError`)."""
        if self.clip is None:
            from .embedders import ImageFeatureModel, TextImageModel

            settings = self.settings
            self.clip = TextImageModel(settings.clip_model, device=settings.device, batch_size=settings.batch_size)
            same = settings.consistency_model in (None, settings.clip_model)
            self.consistency = self.clip if same else ImageFeatureModel(
                settings.consistency_model, device=settings.device, batch_size=settings.batch_size)
        return self

    def score_movie(self, script: MovieScript, mp4: bytes, portraits: bytes | None, source: str,
                    progress=None) -> dict:
        """One line of ``scores.jsonl``: the movie's scores (:func:`~.metrics.movie_scores`), its id and the models."""
        self.load()
        shots = script.shots()
        clip_images, globals_, styles = [], [], []
        count = 0
        for batch in _prefetch(_batches(iter_mp4_frames(mp4, source, threads=True), self.settings.batch_size)):
            count += len(batch)
            clip_global, clip_style = self.clip.embed_frames(batch)
            clip_images.append(clip_global)
            if self.consistency is self.clip:
                globals_.append(clip_global)
                styles.append(clip_style)
            else:
                other_global, other_style = self.consistency.embed_frames(batch)
                globals_.append(other_global)
                styles.append(other_style)
            if progress is not None:
                progress(len(batch))
        if count != len(shots):
            raise ShardError(f"{source} has {count} frames but its script has {len(shots)}; render the movie again.")
        texts = self.clip.embed_texts([replace_names(shot.prompt, script.characters) for shot in shots])
        images = np.concatenate(clip_images)
        portrait_embeddings = {}
        if portraits is not None:
            pictures = read_portraits(portraits, f"{source} portraits")
            for name, picture in pictures.items():  # portraits may have another size than frames: one at a time
                portrait_embeddings[name] = self.consistency.embed_frames([picture])[0][0]
        scores = movie_scores([list(shot.characters) for shot in shots], np.einsum("nd,nd->n", images, texts),
                              np.concatenate(globals_), np.concatenate(styles), portrait_embeddings)
        return {"id": script.id, **scores, "models": self.settings.models()}


def _batches(frames: Iterator[np.ndarray], size: int) -> Iterator[list[np.ndarray]]:
    batch: list[np.ndarray] = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _prefetch(items: Iterator, depth: int = 2) -> Iterator:
    """``items`` produced in a background thread ``depth`` ahead (decoding overlaps the GPU; PyAV releases the GIL)."""
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    done = object()

    def produce() -> None:
        try:
            for item in items:
                buffer.put(item)
        except BaseException as err:  # handed to the consumer, raised there
            buffer.put(err)
        buffer.put(done)

    threading.Thread(target=produce, daemon=True, name="moviellm-score-decode").start()
    while True:
        item = buffer.get()
        if item is done:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


# ------------------------------------------------------------------------------------------- the folder


def iter_movie_samples(root: Path) -> Iterator[tuple[MovieScript, bytes, bytes | None, str]]:
    """``(script, mp4 bytes, portraits bytes or None, source)`` for every movie of a dataset folder."""
    for shard in resolve_shards(root):
        for key, members in iter_tar_samples(shard):
            if "json" not in members or "mp4" not in members:
                raise ShardError(f"sample {key} in {shard} lacks its json or mp4 member; regenerate the dataset.")
            script = MovieScript.from_json(members["json"], source=f"{shard}:{key}.json")
            yield script, members["mp4"], members.get(PORTRAITS_MEMBER), f"{shard}:{key}.mp4"


def read_movie_scores(path: Path) -> list[dict]:
    """The lines of a ``scores.jsonl`` (a last line cut by a kill is dropped)."""
    if not path.exists():
        return []
    lines = []
    for number, line in enumerate(path.read_text(encoding="utf-8").split("\n"), start=1):
        if not line.strip():
            continue
        try:
            lines.append(json.loads(line))
        except ValueError:
            logger.warning("%s line %d is cut off (an interrupted run); it is scored again", path, number)
    return lines


def _check_folder(root: Path) -> None:
    if not root.is_dir():
        raise ConfigError(f"{root} is not a dataset folder; give the folder `moviellm generate` or `render` wrote.")
    if dataset_kind(root) != "movies":
        raise ConfigError(f"{root} holds a {dataset_kind(root)} dataset; moviellm score scores rendered movies.")
    if not (root / MANIFEST_NAME).exists():
        raise ConfigError(f"{root} has no {MANIFEST_NAME}; finish the dataset with `moviellm generate` first.")


def _earlier_scores(path: Path, settings: ScoreSettings, rescore: bool) -> list[dict]:
    earlier = read_movie_scores(path)
    other = next((line["models"] for line in earlier if line.get("models") != settings.models()), None)
    if other is not None and not rescore:
        raise ConfigError(f"{path} holds scores made with other models ({other.get('clip')}, {other.get('consistency')}); "
                          "pass --rescore to score the dataset again with these.")
    if rescore:
        return []
    return earlier


def score_dataset(root: str | Path, settings: ScoreSettings | None = None, progress: bool = True,
                  rescore: bool = False, scorer: Scorer | None = None) -> dict:
    """Score every movie of a dataset folder not scored yet; write ``scores.jsonl`` and ``scores.json``.

    Returns the summary (what ``scores.json`` holds). ``scorer`` shares models between folders (its settings win).
    """
    from tqdm.auto import tqdm

    root = Path(root)
    settings = scorer.settings if scorer is not None else (settings or ScoreSettings())
    _check_folder(root)
    path = root / MOVIE_SCORES_NAME
    earlier = _earlier_scores(path, settings, rescore)
    entries = read_manifest(root / MANIFEST_NAME)
    listed = {e.id for e in entries}
    done = {line["id"] for line in earlier}
    todo_frames = sum(e.frames for e in entries if e.id not in done)
    lines = {line["id"]: line for line in earlier if line["id"] in listed}
    if todo_frames:
        scorer = (scorer or Scorer(settings)).load()  # a wrong model stops here, before any file changes
    # The scores kept, rewritten whole: a line cut by a kill (or of a movie no longer listed) goes.
    atomic_write_text(path, "".join(json.dumps(line) + "\n" for line in lines.values()))
    if todo_frames:
        with open(path, "a", encoding="utf-8") as out, \
                tqdm(total=todo_frames, unit="keyframe", desc=f"scoring {root.name}", disable=not progress) as bar:
            for script, mp4, portraits, source in iter_movie_samples(root):
                if script.id in done or script.id not in listed:
                    continue
                line = scorer.score_movie(script, mp4, portraits, source, progress=bar.update)
                out.write(json.dumps(line) + "\n")
                out.flush()
                os.fsync(out.fileno())
                lines[script.id] = line
    movies = [lines[e.id] for e in entries if e.id in lines]
    summary = {"format": FORMAT, "models": settings.models(), "movies": len(movies),
               "keyframes": sum(m["keyframes"] for m in movies), "metrics": summarize(movies),
               "moviellm_version": __version__, "scored_at": now()}
    atomic_write_text(root / SCORES_NAME, json.dumps(summary, indent=2) + "\n")
    return summary


__all__ = ["DEFAULT_CLIP_MODEL", "ScoreSettings", "Scorer", "iter_movie_samples", "read_movie_scores", "score_dataset"]
