"""Scripts written earlier, read back from files, folders, dataset folders or shards, and handed to the pipeline.

:func:`read_scripts` finds and validates every movie script in what it is given (``.json`` files, ``.jsonl``
files of one script per line, folders of them, dataset folders or ``.tar`` shards, whose frames are
ignored); :class:`PrewrittenWriter` is the "writer" that returns them by id, so that
:func:`moviellm_data.pipeline.render` draws them through the same staging, sharding and manifest
machinery as ``generate``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..script import MovieScript
from .base import MovieRequest, Writer


@dataclass(frozen=True)
class LoadedScript:
    script: MovieScript
    source: str


def _script_files(path: Path) -> Iterator[tuple[Path, str]]:
    """(file, kind) pairs under a SCRIPTS argument: kind is tar, json or jsonl."""
    from ..folder import MANIFEST_NAME  # the folder module pulls in PyAV: only once the verb runs

    if path.is_dir():
        tars = sorted(path.glob("*.tar"))
        if tars and (path / MANIFEST_NAME).exists():
            # A dataset folder: its movies are in its shards; its other files (scores, comparisons) are not scripts.
            yield from ((p, "tar") for p in tars)
            return
        jsons = sorted(p for p in path.glob("*.json") if p.is_file())
        jsonls = sorted(p for p in path.glob("*.jsonl") if p.is_file() and p.name != MANIFEST_NAME)
        if not tars and not jsons and not jsonls:
            raise ConfigError(f"{path} holds no .json scripts and no .tar shards; give script files or a dataset folder.")
        yield from ((p, "tar") for p in tars)
        yield from ((p, "json") for p in jsons)
        yield from ((p, "jsonl") for p in jsonls)
    elif path.is_file():
        kind = {".tar": "tar", ".json": "json", ".jsonl": "jsonl"}.get(path.suffix.lower())
        if kind is None:
            raise ConfigError(f"{path} is not a .json script, a .jsonl file of scripts or a .tar shard.")
        yield path, kind
    else:
        raise ConfigError(f"{path} does not exist; give script files, folders of them, dataset folders or shards.")


def read_scripts(sources: Iterable[str | Path]) -> list[LoadedScript]:
    """Every script in ``sources``, validated, in the order given; one clear error for a bad one or a duplicate id."""
    from ..shards import iter_tar_samples

    loaded: list[LoadedScript] = []
    seen: dict[str, str] = {}
    for source in sources:
        for path, kind in _script_files(Path(source)):
            if kind == "tar":
                items = [(members["json"], f"{path}:{key}.json") for key, members in iter_tar_samples(path) if "json" in members]
            elif kind == "json":
                items = [(path.read_bytes(), str(path))]
            else:
                lines = path.read_text(encoding="utf-8").splitlines()
                items = [(line, f"{path} line {n}") for n, line in enumerate(lines, 1) if line.strip()]
            for data, where in items:
                _check_json(data, where)
                script = MovieScript.from_json(data, source=where)
                if script.id in seen:
                    raise ConfigError(f"movie id {script.id} appears twice ({seen[script.id]} and {where}); give each movie once.")
                seen[script.id] = where
                loaded.append(LoadedScript(script, where))
    if not loaded:
        raise ConfigError("no movie scripts were found in SCRIPTS; give script files or a dataset folder made earlier.")
    return loaded


def _check_json(data: bytes | str, where: str) -> None:
    try:
        json.loads(data)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{where} is not JSON ({err.msg} at line {err.lineno}); give movie-script JSON.") from None


class PrewrittenWriter(Writer):
    """A "writer" that hands back scripts written earlier, by id (what ``render`` feeds the pipeline)."""

    name = "prewritten"

    def __init__(self, scripts: Iterable[MovieScript]) -> None:
        self.scripts = {s.id: s for s in scripts}

    def requests(self) -> list[MovieRequest]:
        """One request per script, indexed in the order the scripts were given."""
        return [MovieRequest(id=s.id, index=i, theme=s.theme, seed=s.provenance.writer.seed or 0)
                for i, s in enumerate(self.scripts.values())]

    def write(self, request: MovieRequest) -> MovieScript:
        return self.scripts[request.id]

    def describe(self) -> dict:
        """The scripts' count and content hash (not their paths: moving them changes nothing)."""
        digest = hashlib.sha256()
        for key in sorted(self.scripts):
            script = self.scripts[key].model_copy(deep=True)
            # Earlier rendering details are replaced when the movie is rendered again.
            script.provenance.renderer = None
            script.provenance.created_at = None
            digest.update(script.to_json().encode("utf-8") + b"\n")
        return {"name": self.name, "scripts": len(self.scripts), "sha256": digest.hexdigest()}


__all__ = ["LoadedScript", "PrewrittenWriter", "read_scripts"]
