"""The dataset folder: its file names, its recipe, its locks, its shards and its manifest, in one place.

Every dataset moviellm writes is a folder of the same layout, whoever writes it (``moviellm generate`` and
``render`` through :mod:`moviellm_data.pipeline`, the benchmark builders through :func:`pack_samples`), and it
is what ``moviellm push`` publishes and ``load_dataset`` reads:

======================  ==========================================================================
``pipeline.yaml``       the recipe that made the folder (:data:`RECIPE_NAME`)
``README.md``           the dataset card (:data:`CARD_NAME`)
``manifest.jsonl``      one line per sample of a complete shard (:data:`MANIFEST_NAME`)
``<prefix>-NNNNN.tar``  WebDataset shards (``movies-r0000-00000.tar``, ``bench-00000.tar``, ``test-00000.tar``)
``contact_sheet.png``   frames of the first movies, drawn for the card (:data:`CONTACT_SHEET_NAME`)
``scores.jsonl``        ``moviellm score``: quality scores, one line per movie (:data:`MOVIE_SCORES_NAME`)
``scores.json``         ``moviellm score``: the dataset's summary of them, shown in the card (:data:`SCORES_NAME`)
``.moviellm/``          work files that are never published: staging, manifest parts, locks, the LLM cache
======================  ==========================================================================

Packing is resumable in the same way for every writer (:class:`ShardSeries`): a shard is written under a
temporary name and renamed when complete, then listed in a manifest. A rerun deletes temporary shards,
lists shards that were renamed but not listed yet, skips samples already listed and numbers new shards
after the existing ones, so a killed run continues with the same command and nothing is written twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path

import yaml

from . import __version__
from .errors import ConfigError, ShardError, stage
from .fileio import atomic_write_text
from .shards import (
    ManifestEntry,
    Member,
    append_manifest,
    iter_tar_samples,
    member_size,
    read_manifest,
    sample_digest,
    write_shard,
)

RECIPE_NAME = "pipeline.yaml"
CARD_NAME = "README.md"
MANIFEST_NAME = "manifest.jsonl"
CONTACT_SHEET_NAME = "contact_sheet.png"
MOVIE_SCORES_NAME = "scores.jsonl"
SCORES_NAME = "scores.json"
WORK_DIR = ".moviellm"
DEFAULT_SHARD_BYTES = 1_000_000_000

#: ``describe(shard, samples)``: the manifest entries of the samples just written into ``shard``.
Describe = Callable[[Path, Sequence[tuple[str, dict[str, Member]]]], list[ManifestEntry]]


# -------------------------------------------------------------------------------------------------- recipe


def read_recipe(root: str | Path) -> dict:
    """``pipeline.yaml`` of a dataset folder ({} when absent); one sentence when it does not parse."""
    path = Path(root) / RECIPE_NAME
    if not path.exists():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError:
        raise ConfigError(f"{path} is not valid YAML; restore it from where the dataset came from, "
                          "or choose a new folder.") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} is not a recipe (a YAML mapping); restore it from where the dataset came from.")
    return data


def dataset_kind(root: str | Path) -> str:
    """What a dataset folder holds: "movies" (``moviellm generate`` / ``render``), or the kind its recipe names."""
    return str(read_recipe(root).get("kind") or "movies")


def write_recipe(root: str | Path, document: dict) -> None:
    """Write ``pipeline.yaml`` atomically (keys in the order given)."""
    atomic_write_text(Path(root) / RECIPE_NAME, yaml.safe_dump(document, sort_keys=False, allow_unicode=True))


def now() -> str:
    """The time a recipe or a rendered movie records (UTC, seconds)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ------------------------------------------------------------------------------------------------- folder


class DatasetFolder:
    """The layout of one dataset folder and the checks that keep earlier work in it safe."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.work = self.root / WORK_DIR
        self.recipe_path = self.root / RECIPE_NAME
        self.manifest_path = self.root / MANIFEST_NAME
        self.card_path = self.root / CARD_NAME

    def holds_anything(self) -> bool:
        """Whether the folder holds files beyond the work folder (an earlier dataset, or someone else's files)."""
        return self.root.is_dir() and any(p.name != WORK_DIR for p in self.root.iterdir())

    def prepare(self, accept: Callable[[dict], None] | None = None) -> None:
        """Create the folder and its work folder, or refuse one that is a file, unwritable, or someone else's.

        A folder that holds files must hold a dataset (a recipe); ``accept(earlier_recipe)`` may refuse it
        further (raise :class:`ConfigError`) when it is a dataset of another kind or source.
        """
        if self.root.exists() and not self.root.is_dir():
            raise ConfigError(f"output {self.root} is a file, not a folder; choose a folder path for --out.")
        if self.holds_anything():
            if not self.recipe_path.exists():
                raise ConfigError(
                    f"output folder {self.root} is not empty and holds no moviellm dataset; "
                    "choose a new or empty folder so nothing in it is overwritten."
                )
            if accept is not None:
                accept(read_recipe(self.root))
        try:
            self.work.mkdir(parents=True, exist_ok=True)
            probe = self.work / f".probe-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as err:
            raise ConfigError(f"cannot write to output folder {self.root} ({err.strerror}); choose a writable folder.") from None

    @contextlib.contextmanager
    def lock(self, name: str, wait: bool) -> Iterator[None]:
        """Hold ``.moviellm/<name>.lock``: wait for it, or refuse at once when another process holds it."""
        with open(self.work / f"{name}.lock", "w") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                raise ConfigError(
                    f"another moviellm process is already writing {name} of {self.root}; wait for it or use another folder."
                ) from None
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # ---- the work files of `moviellm generate`, one set per rank

    def staging(self, rank: int) -> Path:
        return self.work / f"staging-r{rank:04d}"

    def manifest_part(self, rank: int) -> Path:
        return self.work / f"manifest-r{rank:04d}.jsonl"

    def failures_path(self, rank: int) -> Path:
        return self.work / f"failures-r{rank:04d}.jsonl"

    @staticmethod
    def rank_prefix(rank: int) -> str:
        """The shard prefix of one rank's movies: ``movies-r0003`` (shards ``movies-r0003-00000.tar``, ...)."""
        return f"movies-r{rank:04d}"

    def all_entries(self) -> list[ManifestEntry]:
        """Every movie listed by any rank's manifest part, first listing wins, in index order."""
        seen: dict[str, ManifestEntry] = {}
        for part in sorted(self.work.glob("manifest-r*.jsonl")):
            for entry in read_manifest(part):
                seen.setdefault(entry.id, entry)
        return sorted(seen.values(), key=lambda e: (e.index, e.id))

    def merge_manifest(self) -> list[ManifestEntry]:
        """Write every rank's listed movies into ``manifest.jsonl`` (only when it changes); return them."""
        entries = self.all_entries()
        text = "".join(e.to_json() + "\n" for e in entries)
        if not self.manifest_path.exists() or self.manifest_path.read_text(encoding="utf-8") != text:
            atomic_write_text(self.manifest_path, text)
        return entries


def prepare_folder(out: str | Path, kind: str, source: dict, command: str | None = None) -> DatasetFolder:
    """Create a folder for a dataset of ``kind`` packed from ``source``, or check it is an earlier pack of the same.

    Writes ``pipeline.yaml`` ({kind, moviellm_version, created_at, command, source}) into a new folder; an
    existing one keeps its recipe.
    """
    folder = DatasetFolder(out)

    def same_kind_and_source(earlier: dict) -> None:
        if earlier.get("kind") != kind:
            raise ConfigError(f"{folder.root} is not empty and holds no {kind} dataset; choose a new or empty folder.")
        if earlier.get("source") != source:
            raise ConfigError(f"{folder.root} was packed from another source; choose a new folder or rerun with "
                              "the same one.")

    existing = folder.holds_anything()
    folder.prepare(accept=same_kind_and_source)
    if not existing:
        write_recipe(folder.root, {"kind": kind, "moviellm_version": __version__, "created_at": now(),
                                   "command": command, "source": source})
    return folder


# ------------------------------------------------------------------------------------------------ packing


class ShardSeries:
    """The shards ``<prefix>-NNNNN.tar`` of a dataset folder, listed in one manifest file: resumable writing.

    Args:
        root: the dataset folder.
        prefix: the shards' name before ``-NNNNN.tar``.
        manifest: the manifest file that lists them (``manifest.jsonl``, or a rank's part of it).
        describe: the manifest entries of samples written into a shard.
    """

    def __init__(self, root: str | Path, prefix: str, manifest: Path, describe: Describe) -> None:
        self.root = Path(root)
        self.prefix = prefix
        self.manifest = Path(manifest)
        self.describe = describe

    def shards(self) -> list[Path]:
        return sorted(self.root.glob(f"{self.prefix}-*.tar"))

    def listed(self) -> list[ManifestEntry]:
        """The manifest entries of this series."""
        return [e for e in read_manifest(self.manifest) if e.shard.startswith(self.prefix + "-")]

    def recover(self) -> None:
        """Undo what a killed writer left half-done: delete temporary shards, list shards renamed but not listed."""
        for tmp in self.root.glob(f"{self.prefix}-*.tar.tmp"):
            tmp.unlink()
        listed = {e.shard for e in read_manifest(self.manifest)}
        for shard in self.shards():
            if shard.name in listed:
                continue
            # Renamed into place but killed before the manifest was appended: list it now.
            try:
                samples = list(iter_tar_samples(shard))
            except ShardError:
                shard.unlink()  # cannot happen after an atomic rename, but never list a broken shard
                continue
            append_manifest(self.manifest, self.describe(shard, samples))

    def write(self, samples: Sequence[tuple[str, dict[str, Member]]]) -> Path:
        """Write ``samples`` into the next shard of the series, then list them; return the shard."""
        numbers = [int(p.stem.rsplit("-", 1)[1]) for p in self.shards()]
        shard = self.root / f"{self.prefix}-{max(numbers, default=-1) + 1:05d}.tar"
        write_shard(shard, samples)
        with stage(f"listing {shard.name} in {self.manifest}"):  # a rerun lists it if this fails (see recover)
            append_manifest(self.manifest, self.describe(shard, samples))
        return shard


def sample_entries(count_qa: Callable[[dict[str, bytes]], dict[str, int]] | None = None) -> Describe:
    """``describe`` for samples that are not movies: no index, frames or genre; QA counts from ``count_qa(members)``."""

    def describe(shard: Path, samples: Sequence[tuple[str, dict[str, Member]]]) -> list[ManifestEntry]:
        return [
            ManifestEntry(id=key, index=-1, shard=shard.name, bytes=sum(member_size(v) for v in members.values()),
                          sha256=sample_digest(members), frames=0, genre="",
                          qa=count_qa(members) if count_qa else None)
            for key, members in samples
        ]

    return describe


def pack_samples(folder: DatasetFolder, samples: Iterable[tuple[str, dict[str, bytes]]], prefix: str,
                 shard_bytes: int = DEFAULT_SHARD_BYTES, count_qa=None) -> list[ManifestEntry]:
    """Write ``(key, {ext: bytes})`` samples into ``<prefix>-NNNNN.tar`` shards of about ``shard_bytes``.

    Samples already listed in ``manifest.jsonl`` are skipped (a rerun continues); ``count_qa(members)`` gives
    the manifest's QA counts per type. Only one process packs a folder at a time. Returns the manifest
    entries of this prefix.
    """
    series = ShardSeries(folder.root, prefix, folder.manifest_path, sample_entries(count_qa))
    with folder.lock(f"pack-{prefix}", wait=False):
        series.recover()
        done = {e.id for e in series.listed()}
        batch: list[tuple[str, dict[str, bytes]]] = []
        size = 0
        for key, members in samples:
            if key in done:
                continue
            done.add(key)
            batch.append((key, members))
            size += sum(len(v) for v in members.values())
            if size >= shard_bytes:
                series.write(batch)
                batch, size = [], 0
        if batch:
            series.write(batch)
    return series.listed()


def iter_folder(folder: str | Path, prefix: str = "") -> Iterator[tuple[Path, str, dict]]:
    """``(shard, key, members)`` of a packed folder's shards (``prefix*.tar``, sorted), JSON members parsed."""
    for shard in sorted(Path(folder).glob(f"{prefix}*.tar")):
        for key, members in iter_tar_samples(shard):
            if "json" in members:
                members = {**members, "json": json.loads(members["json"])}
            yield shard, key, members
