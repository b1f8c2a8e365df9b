"""``moviellm render SCRIPTS --out DIR``: render scripts written earlier into a new dataset folder.

SCRIPTS are movie-script JSON files (one script each, or JSON lines), folders of them, dataset folders
or ``.tar`` shards made earlier (their scripts are read, their frames ignored). The scripts keep their
ids; they go through the same staging, sharding, manifest and card machinery as ``generate``, so an
interrupted render continues where it stopped when the same command is run again.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..backends import add_backend_arguments, build_renderer
from ..argtypes import byte_size
from ..cli import verb
from ..errors import ConfigError
from ..renderers.base import Renderer
from ..script import MovieScript
from ..writers.base import MovieRequest, Writer


@dataclass(frozen=True)
class LoadedScript:
    script: MovieScript
    source: str


def _script_files(path: Path) -> Iterator[tuple[Path, str]]:
    """(file, kind) pairs under a SCRIPTS argument: kind is tar, json or jsonl."""
    from ..folder import MANIFEST_NAME  # the folder module pulls in PyAV: only once the verb runs

    if path.is_dir():
        tars = sorted(path.glob("*.tar"))
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


def render(
    sources: Iterable[str | Path],
    out: str | Path,
    renderer: Renderer,
    shard_bytes: int | None = None,
    crf: int = 18,
    progress: bool = True,
    command: str | None = None,
    scripts: list[LoadedScript] | None = None,
):
    """Render the scripts in ``sources`` with ``renderer`` into the dataset folder ``out``.

    ``scripts`` (from :func:`read_scripts`) saves reading ``sources`` again. Returns the pipeline's
    :class:`~moviellm_data.pipeline.GenerateResult`. Running it again after an interruption continues;
    running it into a folder made from other scripts or settings is refused.
    """
    from ..pipeline import DEFAULT_SHARD_BYTES, GenerateOptions, generate

    sources = [Path(s) for s in sources]
    out = Path(out)
    for source in sources:
        if source.exists() and out.exists() and out.resolve() == source.resolve():
            raise ConfigError(f"--out {out} is one of the SCRIPTS sources; render into a new folder.")
    writer = PrewrittenWriter(item.script for item in (scripts if scripts is not None else read_scripts(sources)))
    requests = writer.requests()
    options = GenerateOptions(out=out, movies=len(requests), seed=0, themes=None,
                              shard_bytes=shard_bytes or DEFAULT_SHARD_BYTES, crf=crf, command=command)
    return generate(options, writer, renderer, progress=progress, requests=requests)


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("scripts", nargs="+", metavar="SCRIPTS",
                   help="Movie-script .json files, .jsonl files of scripts, folders of them, dataset folders or .tar shards.")
    p.add_argument("--out", required=True, help="New dataset folder (or an earlier render of the same scripts, to continue).")
    p.add_argument("--shard-size", type=byte_size, default="1GB", help="Target size of one tar shard. Default: 1GB.")
    p.add_argument("--crf", type=int, default=18, help="H.264 quality, lower is larger and closer. Default: 18.")
    p.add_argument("--no-progress", action="store_true", help="Do not draw a progress bar.")
    add_backend_arguments(p, writers=False)


@verb("render", "Render movie scripts written earlier (files, folders, datasets, shards) into a new dataset folder.", _arguments)
def run_render(args: argparse.Namespace) -> int:
    from ..pipeline import command_line

    # Read the scripts before loading a renderer, so a wrong path costs no model load.
    scripts = read_scripts(args.scripts)
    renderer = build_renderer(args)
    result = render(args.scripts, args.out, renderer, shard_bytes=args.shard_size, crf=args.crf,
                    progress=not args.no_progress, command=command_line(), scripts=scripts)
    print(f"{result.out}: rendered {result.written} movies, {result.skipped} already there, "
          f"{len(result.failed)} failed; the dataset holds {result.total_in_dataset} movies.")
    for failure in result.failed:
        print(f"  failed {failure.request.id}: {failure.reason}", file=sys.stderr)
    return 1 if result.failed else 0


__all__ = ["LoadedScript", "PrewrittenWriter", "read_scripts", "render"]
