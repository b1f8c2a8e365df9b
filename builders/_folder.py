"""Publishable dataset folders for the QA builders: WebDataset shards, manifest, recipe, card.

The movie builder gets its folder from ``moviellm generate``; the benchmark builders convert sources into
the same kind of folder, so ``moviellm push`` publishes all of them alike and ``load_dataset("org/name")``
reads them back. Packing is resumable: the manifest lists what is in complete shards, and a rerun skips
those samples and numbers its shards after the existing ones.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path

import yaml

from moviellm_data import __version__
from moviellm_data.errors import ConfigError
from moviellm_data.fileio import atomic_write_text
from moviellm_data.pipeline import DEFAULT_SHARD_BYTES, RECIPE_NAME, WORK_DIR
from moviellm_data.shards import (
    MANIFEST_NAME,
    ManifestEntry,
    append_manifest,
    iter_tar_samples,
    read_manifest,
    sample_digest,
    write_shard,
)



def safe_key(text: str) -> str:
    """A WebDataset key for a source id: no dots (WebDataset splits keys at the first dot), no slashes."""
    key = "".join(c if c.isalnum() or c in "-_" else "_" for c in str(text))
    if key != str(text):  # keep distinct ids distinct after replacing characters
        key = f"{key}_{hashlib.sha256(str(text).encode()).hexdigest()[:6]}"
    return key or "empty"


def prepare_folder(out: Path, kind: str, source: dict, command: str | None = None) -> None:
    """Create ``out`` or check that it is an earlier pack of the same source; write ``pipeline.yaml``."""
    out = Path(out)
    recipe_path = out / RECIPE_NAME
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output {out} is a file, not a folder; choose a folder path.")
    if out.is_dir() and any(p.name != WORK_DIR for p in out.iterdir()):
        earlier = yaml.safe_load(recipe_path.read_text(encoding="utf-8")) if recipe_path.exists() else None
        if not isinstance(earlier, dict) or earlier.get("kind") != kind:
            raise ConfigError(f"{out} is not empty and holds no {kind} dataset; choose a new or empty folder.")
        if earlier.get("source") != source:
            raise ConfigError(f"{out} was packed from another source; choose a new folder or rerun with the same one.")
        return
    out.mkdir(parents=True, exist_ok=True)
    document = {
        "kind": kind,
        "moviellm_version": __version__,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "source": source,
    }
    atomic_write_text(recipe_path, yaml.safe_dump(document, sort_keys=False, allow_unicode=True))


def pack(out: Path, samples: Iterable[tuple[str, dict[str, bytes]]], prefix: str,
         shard_bytes: int = DEFAULT_SHARD_BYTES, count_qa=None) -> list[ManifestEntry]:
    """Write ``(key, {ext: bytes})`` samples into ``<prefix>-NNNNN.tar`` shards of about ``shard_bytes``.

    Samples already listed in the manifest are skipped (a rerun continues). ``count_qa(members)`` gives the
    manifest's QA counts per type. Returns the manifest entries of this prefix.
    """
    out = Path(out)
    manifest = out / MANIFEST_NAME
    done = {e.id for e in read_manifest(manifest) if e.shard.startswith(prefix + "-")}
    for tmp in out.glob(f"{prefix}-*.tar.tmp"):
        tmp.unlink()
    numbers = [int(p.stem.rsplit("-", 1)[1]) for p in out.glob(f"{prefix}-*.tar")]
    listed = {e.shard for e in read_manifest(manifest)}
    for path in out.glob(f"{prefix}-*.tar"):
        if path.name not in listed:  # renamed into place but killed before it was listed: list it now
            append_manifest(manifest, _entries(path, list(iter_tar_samples(path)), count_qa))
            done |= {key for key, _ in iter_tar_samples(path)}
    number = max(numbers, default=-1) + 1
    batch: list[tuple[str, dict[str, bytes]]] = []
    size = 0
    for key, members in samples:
        if key in done:
            continue
        done.add(key)
        batch.append((key, members))
        size += sum(len(v) for v in members.values())
        if size >= shard_bytes:
            _flush(out, prefix, number, batch, count_qa)
            number, batch, size = number + 1, [], 0
    if batch:
        _flush(out, prefix, number, batch, count_qa)
    return [e for e in read_manifest(manifest) if e.shard.startswith(prefix + "-")]


def _flush(out: Path, prefix: str, number: int, batch: list, count_qa) -> None:
    shard = out / f"{prefix}-{number:05d}.tar"
    write_shard(shard, batch)
    append_manifest(out / MANIFEST_NAME, _entries(shard, batch, count_qa))


def _entries(shard: Path, samples: list, count_qa) -> list[ManifestEntry]:
    return [
        ManifestEntry(id=key, index=-1, shard=shard.name, bytes=sum(len(v) for v in members.values()),
                      sha256=sample_digest(members), frames=0, genre="",
                      qa=count_qa(members) if count_qa else None)
        for key, members in samples
    ]


def iter_folder(folder: Path, prefix: str = "") -> Iterator[tuple[Path, str, dict]]:
    """``(shard, key, members)`` of a packed folder's shards (``prefix-*.tar``, sorted), JSON members parsed."""
    for shard in sorted(Path(folder).glob(f"{prefix}*.tar")):
        for key, members in iter_tar_samples(shard):
            if "json" in members:
                members = {**members, "json": json.loads(members["json"])}
            yield shard, key, members
