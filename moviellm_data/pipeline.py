"""The generate job: requests -> writer -> renderer -> mp4 -> staged movie -> shards -> manifest -> card.

:func:`generate` makes new movies; :func:`render` draws scripts written earlier through the same machinery.

Resumable and idempotent. A movie is first *staged* under ``DIR/.moviellm/staging-r<rank>/`` (its mp4,
then its JSON last, each written to a temporary name and renamed), then packed into a shard that is
renamed into place when complete, then listed in the manifest, then unstaged. A run killed at any
point and restarted with the same command redoes at most the movie it was drawing.

Several processes (``torchrun --nproc-per-node K``, or any launcher that sets RANK and WORLD_SIZE)
share the movies by index modulo world size; each writes its own shards and manifest part, and whoever
finishes last merges the parts into ``manifest.jsonl`` and writes the card.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from . import __version__
from .card import write_dataset_card
from .errors import ConfigError, stage
from .fileio import replacing
from .folder import DEFAULT_SHARD_BYTES, DatasetFolder, ShardSeries, now, read_recipe, write_recipe
from .limits import check_crf, check_movies, check_themes
from .renderers.base import Renderer
from .script import MovieScript
from .shards import ManifestEntry, manifest_entries_for
from .video import encode_mp4
from .writers.base import MovieRequest, WriteFailure, Writer, derive_seed, make_movie_id
from .writers.grammar import DEFAULT_THEMES
from .writers.prewritten import LoadedScript, PrewrittenWriter, read_scripts

logger = logging.getLogger(__name__)


@dataclass
class GenerateOptions:
    """What to make and where.

    Args:
        out: the dataset folder (created if missing; must be empty or an earlier dataset of the same recipe).
        movies: how many movies the dataset should hold in total.
        seed: the run seed; each movie's seed derives from it and the movie's index.
        themes: themes assigned round-robin to movies; None picks from the built-in theme list.
        shard_bytes: target size of one tar shard.
        crf: H.264 quality (lower is larger and closer to the rendered frames).
    """

    out: Path
    movies: int
    seed: int = 0
    themes: list[str] | None = None
    shard_bytes: int = DEFAULT_SHARD_BYTES
    crf: int = 18
    command: str | None = None

    def __post_init__(self) -> None:
        # Every bound is checked here, before generate() creates anything (moviellm_data.limits).
        self.out = Path(self.out)
        check_movies(self.movies)
        check_crf(self.crf)
        if self.shard_bytes < 1:
            raise ConfigError(f"the shard size must be positive, got {self.shard_bytes} bytes.")
        if self.themes is not None:
            self.themes = [t.strip() for t in self.themes if t and t.strip()]
            if not self.themes:
                raise ConfigError("the theme list is empty; give at least one theme or leave themes out.")
            check_themes(self.themes)


@dataclass
class GenerateResult:
    """What one call made. ``written`` counts the movies this call added to the dataset, those a killed run had
    already staged (written and rendered, not yet packed) included; ``skipped`` those that were there before."""

    out: Path
    written: int = 0
    skipped: int = 0
    failed: list[WriteFailure] = field(default_factory=list)
    total_in_dataset: int = 0
    complete: bool = False


def distributed_rank() -> tuple[int, int]:
    """(rank, world size) from the variables torchrun and accelerate set; (0, 1) when absent."""
    try:
        rank = int(os.environ.get("RANK", "0"))
        world = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ConfigError("RANK and WORLD_SIZE must be whole numbers.") from None
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"RANK={rank} does not fit WORLD_SIZE={world}.")
    return rank, world


class PlannedRequests(Sequence[MovieRequest]):
    """The movies of a dataset, index by index, computed when asked for: planning a million movies costs nothing.

    Movie ``i``'s seed derives from the run seed and ``i``, its theme from the theme list (or the built-in one), so
    the plan is independent of how many processes share the work.
    """

    def __init__(self, movies: int, seed: int, themes: list[str] | None) -> None:
        self.movies, self.seed, self.themes = movies, seed, themes

    def __len__(self) -> int:
        return self.movies

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self.movies))]
        if not -self.movies <= index < self.movies:
            raise IndexError(f"movie {index} is not planned (the run has {self.movies})")
        index %= self.movies
        movie_seed = derive_seed(self.seed, index)
        themes = self.themes
        theme = themes[index % len(themes)] if themes else DEFAULT_THEMES[movie_seed % len(DEFAULT_THEMES)]
        return MovieRequest(id=make_movie_id(index, movie_seed, theme), index=index, theme=theme, seed=movie_seed)

    def __iter__(self) -> Iterator[MovieRequest]:
        return (self[i] for i in range(self.movies))


def plan_requests(movies: int, seed: int, themes: list[str] | None) -> PlannedRequests:
    """The movies of a dataset, index by index (a lazy sequence); independent of how many processes share the work."""
    return PlannedRequests(movies, seed, themes)


def read_themes_file(path: str | Path) -> list[str]:
    """One theme per line; blank lines and lines starting with '#' are skipped."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"themes file {path} does not exist; give an existing file with one theme per line.") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read themes file {path} ({err}); give a UTF-8 text file with one theme per line.") from None
    themes = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not themes:
        raise ConfigError(f"themes file {path} has no themes; write one theme per line.")
    try:
        check_themes(themes)
    except ConfigError as err:
        raise ConfigError(f"themes file {path}: {err}") from None
    return themes


def recipe_of(options: GenerateOptions, writer: Writer, renderer: Renderer) -> dict:
    """What determines the movies; a rerun into the same folder must have the same recipe."""
    return {
        "seed": options.seed,
        "themes": options.themes,
        "writer": writer.describe(),
        "renderer": renderer.describe(),
        "video": {"codec": "h264", "container": "mp4", "fps": 1, "crf": options.crf},
    }


def _check_or_write_recipe(folder: DatasetFolder, options: GenerateOptions, recipe: dict) -> None:
    """Write ``pipeline.yaml``, or check that the folder's movies were made with the same recipe."""
    document = {
        "moviellm_version": __version__,
        "command": options.command,
        "created_at": now(),
        "movies": options.movies,
        "shard_bytes": options.shard_bytes,
        "recipe": recipe,
    }
    if folder.recipe_path.exists():
        earlier = read_recipe(folder.root)
        if earlier.get("recipe") != recipe:
            changed = sorted(k for k in set(recipe) | set(earlier.get("recipe", {})) if recipe.get(k) != earlier.get("recipe", {}).get(k))
            raise ConfigError(
                f"{folder.root} holds movies made with a different recipe ({', '.join(changed)} differ); "
                "rerun with the original options or choose a new --out folder."
            )
        document["created_at"] = earlier.get("created_at", document["created_at"])
        document["movies"] = max(options.movies, int(earlier.get("movies", 0)))
        if earlier == document:
            return
    write_recipe(folder.root, document)


def generate(
    options: GenerateOptions,
    writer: Writer,
    renderer: Renderer,
    rank: int | None = None,
    world_size: int | None = None,
    progress: bool = True,
    requests: list[MovieRequest] | None = None,
) -> GenerateResult:
    """Make ``options.movies`` movies into ``options.out`` (or this rank's share of them).

    Returns what this call wrote, skipped (already there) and failed. Safe to call again after a crash
    or with a larger ``movies``: finished movies are never rewritten. ``requests`` replaces the planned
    movies (``moviellm render`` passes the ids of scripts written earlier; its writer returns them).
    """
    if rank is None or world_size is None:
        rank, world_size = distributed_rank()
    folder = DatasetFolder(options.out)
    folder.prepare()
    recipe = recipe_of(options, writer, renderer)
    with folder.lock("recipe", wait=True):
        _check_or_write_recipe(folder, options, recipe)

    result = GenerateResult(out=folder.root)
    with folder.lock(f"rank-{rank}", wait=False):
        packer = _RankPacker(folder, rank, options)
        done = packer.recover()
        planned = requests if requests is not None else plan_requests(options.movies, options.seed, options.themes)
        mine = range(rank, len(planned), world_size)  # indices into the plan: never a list of every request
        staged = packer.staged_ids()
        # Staged by a killed run (written and rendered, not packed): packed now, counted as written by this run.
        already = 0
        for i in mine:
            movie_id = planned[i].id
            if movie_id in done:
                result.skipped += 1
            elif movie_id in staged:
                already += 1
        to_write = (request for request in map(planned.__getitem__, mine)
                    if request.id not in done and request.id not in staged)
        bar = tqdm(
            total=len(mine) - result.skipped,
            initial=0,
            desc=f"movies (rank {rank})" if world_size > 1 else "movies",
            unit="movie",
            disable=not progress,
            position=rank if world_size > 1 else None,
        )
        with bar:
            if already:
                bar.update(already)
                result.written += already
            packer.pack_if_full()
            for item in writer.write_many(to_write):
                if isinstance(item, WriteFailure):
                    result.failed.append(item)
                    packer.record_failure(item)
                    logger.warning("movie %s failed: %s", item.request.id, item.reason)
                else:
                    packer.stage(item, renderer)
                    result.written += 1
                    packer.pack_if_full()
                bar.update(1)
        packer.pack()
    with folder.lock("finalize", wait=True):
        entries = finalize(folder)
    result.total_in_dataset = len(entries)
    result.complete = len(entries) >= options.movies
    return result


def render(
    sources: Iterable[str | Path],
    out: str | Path,
    renderer: Renderer,
    shard_bytes: int | None = None,
    crf: int = 18,
    progress: bool = True,
    command: str | None = None,
    scripts: list[LoadedScript] | None = None,
) -> GenerateResult:
    """Render scripts written earlier (``moviellm render``): those in ``sources``, with ``renderer``, into ``out``.

    ``sources`` are what :func:`~moviellm_data.writers.prewritten.read_scripts` reads (script files, folders of
    them, dataset folders, shards); ``scripts`` (its result) saves reading them again. The scripts keep their ids
    and go through the same staging, sharding, manifest and card machinery as :func:`generate`. Running it
    again after an interruption continues; running it into a folder made from other scripts or settings is
    refused.
    """
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


def finalize(folder: DatasetFolder) -> list[ManifestEntry]:
    """Merge the manifest parts into ``manifest.jsonl`` and (re)write the dataset card."""
    entries = folder.merge_manifest()
    write_dataset_card(folder.root, entries, read_recipe(folder.root))
    return entries


class _RankPacker:
    """Stages finished movies of one rank and packs them into that rank's shards (``movies-rNNNN-*.tar``)."""

    def __init__(self, folder: DatasetFolder, rank: int, options: GenerateOptions) -> None:
        self.folder = folder
        self.rank = rank
        self.options = options
        self.staging = folder.staging(rank)
        self.staging.mkdir(parents=True, exist_ok=True)
        self.shards = ShardSeries(folder.root, folder.rank_prefix(rank), folder.manifest_part(rank), manifest_entries_for)

    # ------------------------------------------------------------------------------------ recovery

    def recover(self) -> set[str]:
        """Undo what a killed run of this rank left half-done; return the ids of every listed movie."""
        for tmp in self.staging.glob("*.tmp"):
            tmp.unlink()
        self.shards.recover()
        done = {e.id for e in self.folder.all_entries()}
        for path in self.staging.iterdir():
            if path.name.split(".", 1)[0] in done:
                path.unlink()
        return done

    # ------------------------------------------------------------------------------------- staging

    def staged_ids(self) -> set[str]:
        # The JSON is written last, so its presence marks a complete staged movie.
        return {p.name.split(".", 1)[0] for p in self.staging.glob("*.json")}

    def stage(self, script: MovieScript, renderer: Renderer) -> None:
        rendered = script.model_copy(deep=True)
        style = renderer.style_embedding(script)
        rendered.provenance.renderer = renderer.provenance(script)
        rendered.provenance.created_at = now()
        self._write_staged(f"{script.id}.mp4", lambda tmp: encode_mp4(
            renderer.render_frames(script), fps=1, crf=self.options.crf, output=tmp), f"encoding movie {script.id}")
        if style is not None:
            self._write_staged(f"{script.id}.style.safetensors", lambda tmp: tmp.write_bytes(style),
                               f"staging the style of movie {script.id}")
        portraits = renderer.portraits(script)  # what the frames just drawn were conditioned on
        if portraits is not None:
            self._write_staged(f"{script.id}.portraits.safetensors", lambda tmp: tmp.write_bytes(portraits),
                               f"staging the portraits of movie {script.id}")
        # The JSON goes last: its presence marks the staged movie complete.
        self._write_staged(f"{script.id}.json", lambda tmp: tmp.write_text(rendered.to_json(), encoding="utf-8"),
                           f"staging movie {script.id}")

    def _write_staged(self, name: str, write: Callable[[Path], object], what: str) -> None:
        """Have ``write`` fill a temporary file, make it durable, then rename it into place (nothing left on failure)."""
        path = self.staging / name
        with stage(f"{what} ({path})"), replacing(path, tmp=self.staging / f"{name}.tmp", durable=True) as tmp:
            write(tmp)

    def _staged_samples(self) -> list[tuple[str, dict[str, Path]]]:
        """Staged movies as (key, {ext: file}); the files are streamed into the shard, not loaded."""
        samples = []
        for key in sorted(self.staged_ids()):
            members = {p.name.split(".", 1)[1]: p for p in self.staging.glob(f"{key}.*") if not p.name.endswith(".tmp")}
            samples.append((key, members))
        return samples

    def _staged_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.staging.iterdir() if not p.name.endswith(".tmp"))

    # --------------------------------------------------------------------------------------- packing

    def pack_if_full(self) -> None:
        if self._staged_bytes() >= self.options.shard_bytes:
            self.pack()

    def pack(self) -> None:
        """Write every staged movie into a new shard, list it, then unstage it."""
        samples = self._staged_samples()
        if not samples:
            return
        self.shards.write(samples)
        for key, members in samples:
            for ext in members:
                (self.staging / f"{key}.{ext}").unlink()

    def record_failure(self, failure: WriteFailure) -> None:
        line = json.dumps({"id": failure.request.id, "index": failure.request.index, "theme": failure.request.theme,
                           "reason": failure.reason})
        with open(self.folder.failures_path(self.rank), "a", encoding="utf-8") as fh:
            fh.write(line + "\n")


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command as typed, for the recipe (arguments quoted): `argv` as `cli.main` parsed it, else sys.argv."""
    return " ".join(shlex.quote(a) for a in ["moviellm", *(sys.argv[1:] if argv is None else argv)])
