"""WebDataset shards: one sample per movie (``<id>.json`` + ``<id>.mp4`` [+ ``<id>.style.safetensors``]).

Writing is crash-safe: a shard is written under ``<name>.tar.tmp`` and renamed when complete, and the
manifest (JSON lines: id, index, shard, bytes, sha256, frames) is appended only after the rename, so a
movie listed in the manifest is always in a complete shard (where the manifest lives and how a rerun
resumes is the dataset folder's business: :mod:`moviellm_data.folder`). Reading never extracts files to disk and
never unpickles anything.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .errors import ShardError, stage
from .fileio import replacing
from .script import MovieScript
from .video import count_mp4_frames, decode_mp4

# Member order inside a sample; every sample of a dataset carries the same members.
MEMBER_ORDER = ("json", "mp4", "style.safetensors")


@dataclass(frozen=True)
class ManifestEntry:
    id: str
    index: int
    shard: str
    bytes: int
    sha256: str
    frames: int
    genre: str = ""
    qa: dict[str, int] | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def safe_key(text: str) -> str:
    """A WebDataset key for a source id: no dots (WebDataset splits keys at the first dot), no slashes."""
    key = "".join(c if c.isalnum() or c in "-_" else "_" for c in str(text))
    if key != str(text):  # keep distinct ids distinct after replacing characters
        key = f"{key}_{hashlib.sha256(str(text).encode()).hexdigest()[:6]}"
    return key or "empty"


# A member is its bytes, or the path of a file holding them (streamed, so a shard of large movies is
# never held in memory whole).
Member = bytes | Path


def member_size(member: Member) -> int:
    return len(member) if isinstance(member, bytes) else Path(member).stat().st_size


def member_bytes(member: Member) -> bytes:
    return member if isinstance(member, bytes) else Path(member).read_bytes()


def _member_sha256(member: Member) -> bytes:
    if isinstance(member, bytes):
        return hashlib.sha256(member).digest()
    h = hashlib.sha256()
    with open(member, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.digest()


def sample_digest(members: dict[str, Member]) -> str:
    """sha256 over a sample's members in their canonical order (names and contents)."""
    h = hashlib.sha256()
    for ext in sorted(members, key=_member_rank):
        h.update(ext.encode() + b"\0" + _member_sha256(members[ext]))
    return h.hexdigest()


def _member_rank(ext: str) -> tuple[int, str]:
    return (MEMBER_ORDER.index(ext) if ext in MEMBER_ORDER else len(MEMBER_ORDER), ext)


def write_shard(path: Path, samples: Iterable[tuple[str, dict[str, Member]]]) -> list[tuple[str, dict[str, Member]]]:
    """Write ``(key, {ext: bytes or file path})`` samples to the tar ``path`` atomically; return them.

    Members get fixed metadata (mtime 0, owner 0, mode 0644) so that the same movies give the same bytes.
    """
    path = Path(path)
    written = []
    # A full disk or a failing source file leaves neither the shard nor its temporary file behind.
    with stage(f"writing shard {path}"), replacing(path, tmp=path.with_name(path.name + ".tmp"), durable=True) as tmp:
        with open(tmp, "wb") as fh, tarfile.open(fileobj=fh, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for key, members in samples:
                if "." in key:
                    raise ShardError(f"sample key {key!r} contains a dot; WebDataset would split it.")
                for ext in sorted(members, key=_member_rank):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    member = members[ext]
                    info.size = member_size(member)
                    info.mtime = 0
                    info.mode = 0o644
                    if isinstance(member, bytes):
                        tar.addfile(info, io.BytesIO(member))
                    else:
                        with open(member, "rb") as src:
                            tar.addfile(info, src)
                written.append((key, members))
    return written


# WebDataset's split of a member name into sample key and extension (webdataset.tariterators.base_plus_ext): the key
# is everything before the first dot of the file name, folders included; names without a dot are not sample members.
_KEY_AND_EXTENSION = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")
# Members webdataset skips as metadata (``__index__`` and the like).
_META = re.compile(r"__[^/]*__($|/)")


@dataclass(frozen=True)
class TarMember:
    """One member of a sample: where its bytes are in the tar, and the bytes themselves when they were read."""

    offset: int
    size: int
    data: bytes | None = None


def iter_tar_members(path: str | Path, load: Callable[[str], bool] | None = None
                     ) -> Iterator[tuple[str, dict[str, TarMember]]]:
    """Yield ``(key, {ext: TarMember})`` per sample of a tar, grouped exactly as webdataset groups them.

    The key is the member name up to the first dot of its file name, folders included (``a/m1.json`` and
    ``b/m1.json`` are two samples), extensions are lower-cased, adjacent members with the same key form one sample,
    and ``__meta__`` names and names without a dot are skipped. ``load(ext)`` says which members' bytes to read
    (default: all); the others are only located (``offset``, ``size``), so a reader can fetch a large video later.
    Raises :class:`ShardError` with one sentence when the file is missing, truncated, not a tar, or repeats a
    member within a sample (webdataset refuses that too).
    """
    path = Path(path)
    if not path.is_file():
        raise ShardError(f"shard {path} does not exist.")
    current_key, current = None, {}
    try:
        with tarfile.open(path, mode="r:") as tar:
            for info in tar:
                if not info.isfile() or _META.match(info.name):
                    continue
                match = _KEY_AND_EXTENSION.match(info.name)
                if match is None:
                    continue
                key, ext = match.group(1), match.group(2).lower()
                if key != current_key and current:
                    yield current_key, current
                    current = {}
                current_key = key
                if ext in current:
                    raise ShardError(f"{path} holds {info.name} twice in sample {key}; webdataset refuses such a "
                                     "tar too: repack it with one member per name.")
                data = None
                if load is None or load(ext):
                    data = tar.extractfile(info).read()
                    if len(data) != info.size:
                        raise tarfile.ReadError("unexpected end of data")
                current[ext] = TarMember(info.offset_data, info.size, data)
    except (tarfile.TarError, EOFError, OSError) as err:
        raise ShardError(
            f"{path} is not a complete tar shard ({err}); delete it and rerun the command that wrote it."
        ) from None
    if current:
        yield current_key, current


def iter_tar_samples(path: str | Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Yield ``(key, {ext: bytes})`` for each sample of a tar shard, grouped as webdataset groups them.

    See :func:`iter_tar_members` (keys keep their folder; one sentence when the tar cannot be read).
    """
    for key, members in iter_tar_members(path):
        yield key, {ext: member.data for ext, member in members.items()}


def key_id(key: str) -> str:
    """The movie id a sample key names: its last path component (``train/m000001_ab`` -> ``m000001_ab``)."""
    return key.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class MovieSample:
    """One movie of a shard: its validated script and its mp4 bytes, not decoded yet."""

    shard: Path
    key: str
    script: MovieScript
    mp4: bytes
    members: dict[str, bytes]

    @property
    def where(self) -> str:
        return f"{self.shard}:{self.key}"

    def frames(self) -> np.ndarray:
        """Every frame, uint8 [T, H, W, 3]; one sentence when the mp4 does not decode or disagrees with the script."""
        frames = decode_mp4(self.mp4, source=f"{self.where}.mp4")
        self._check_count(len(frames))
        return frames

    def check_video(self) -> int:
        """Decode the mp4 frame by frame, keeping none, and check it holds the script's frames; return the count."""
        count = count_mp4_frames(self.mp4, source=f"{self.where}.mp4")
        self._check_count(count)
        return count

    def _check_count(self, count: int) -> None:
        if count != self.script.num_frames:
            raise ShardError(f"{self.where}.mp4 has {count} frames but its script has {self.script.num_frames}; "
                             "regenerate the movie.")


def iter_movie_samples(source: str | Path | Iterable[str | Path]) -> Iterator[MovieSample]:
    """Every movie of a dataset folder, a shard or a list of shards, its script validated, its video not decoded.

    A sample without its json or mp4 member, or whose script id differs from its key, is refused with one sentence.
    """
    for shard in resolve_shards(source):
        for key, members in iter_tar_samples(shard):
            if "json" not in members or "mp4" not in members:
                raise ShardError(f"sample {key} in {shard} lacks its json or mp4 member; regenerate the dataset.")
            script = MovieScript.from_json(members["json"], source=f"{shard}:{key}.json")
            if script.id != key_id(key):
                raise ShardError(f"sample {key} in {shard} holds the script of movie {script.id}; a sample's key must "
                                 "be its movie id: regenerate or repack the dataset.")
            yield MovieSample(shard, key, script, members["mp4"], members)


def read_movies(source: str | Path | Iterable[str | Path], decode: bool = True) -> Iterator[tuple[MovieScript, np.ndarray | bytes]]:
    """Yield ``(script, frames)`` for every movie in a dataset folder, a shard, or a list of shards.

    ``frames`` is a uint8 array [T, H, W, 3] in timeline order (or the raw mp4 bytes when ``decode`` is
    False). Scripts are validated; a movie whose video and timeline disagree, or whose id is not its sample key,
    raises :class:`ShardError`.
    """
    for sample in iter_movie_samples(source):
        yield sample.script, (sample.frames() if decode else sample.mp4)


def count_samples(source: str | Path | Iterable[str | Path]) -> int:
    """How many samples the shards hold, read from the tar headers only (no member is read)."""
    return sum(1 for shard in resolve_shards(source) for _ in iter_tar_members(shard, load=lambda ext: False))


def resolve_shards(source: str | Path | Iterable[str | Path]) -> list[Path]:
    """Shard paths from a folder (its ``*.tar``, sorted), a single tar, or a list of tars."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.is_dir():
            shards = sorted(path.glob("*.tar"))
            if not shards:
                raise ShardError(f"{path} holds no .tar shards; run `moviellm generate --out {path}` first.")
            return shards
        if not path.exists():
            raise ShardError(f"{path} does not exist; give a dataset folder or a .tar shard.")
        return [path]
    return [Path(p) for p in source]


def read_manifest(path: str | Path) -> list[ManifestEntry]:
    """Entries of a manifest file; a truncated last line (a write cut by a kill) is ignored."""
    path = Path(path)
    if not path.exists():
        return []
    entries = []
    with open(path, encoding="utf-8") as fh:
        lines = fh.read().split("\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entries.append(ManifestEntry(**json.loads(line)))
        except (json.JSONDecodeError, TypeError) as err:
            if number == len(lines) or (number == len(lines) - 1 and not lines[-1]):
                continue  # cut short by a kill after the shard was renamed: the shard is re-indexed
            raise ShardError(f"{path} line {number} is not a manifest entry ({err}); restore or delete it.") from None
    return entries


def append_manifest(path: str | Path, entries: Iterable[ManifestEntry]) -> None:
    """Append entries and fsync, so a listed movie survives a crash right after."""
    path = Path(path)
    with open(path, "ab+") as fh:
        # A kill mid-append leaves a partial last line; it was never committed, so drop it.
        size = fh.seek(0, os.SEEK_END)
        if size:
            fh.seek(max(0, size - 65536))
            tail = fh.read()
            if not tail.endswith(b"\n"):
                cut = tail.rfind(b"\n")
                fh.truncate(size - len(tail) + cut + 1 if cut >= 0 else 0)
                fh.seek(0, os.SEEK_END)
        for entry in entries:
            fh.write((entry.to_json() + "\n").encode("utf-8"))
        fh.flush()
        os.fsync(fh.fileno())


def manifest_entries_for(shard: Path, samples: Iterable[tuple[str, dict[str, Member]]]) -> list[ManifestEntry]:
    """Manifest entries describing the samples of one shard."""
    entries = []
    for key, members in samples:
        script = json.loads(member_bytes(members["json"]))
        entries.append(
            ManifestEntry(
                id=key,
                index=_index_from_id(key),
                shard=shard.name,
                bytes=sum(member_size(v) for v in members.values()),
                sha256=sample_digest(members),
                frames=len(script.get("timeline", [])),
                genre=script.get("genre", ""),
                qa=count_qa_types(script.get("qa", [])),
            )
        )
    return entries


def count_qa_types(qa: list[dict]) -> dict[str, int]:
    """QA pairs per type of a script's `qa` list (what manifest entries record)."""
    counts: dict[str, int] = {}
    for pair in qa:
        counts[pair.get("type", "")] = counts.get(pair.get("type", ""), 0) + 1
    return counts


def _index_from_id(key: str) -> int:
    """Our ids look like m000042_ab12cd34; other ids have no index (-1)."""
    head = key.split("_", 1)[0]
    return int(head[1:]) if head.startswith("m") and head[1:].isdigit() else -1
