"""``datasets`` builder of synthetic movies: runs the moviellm pipeline from a named recipe.

Usage (offline; nothing is downloaded)::

    from moviellm_data.builders.synthetic_movies import SyntheticMovies

    builder = SyntheticMovies(config_name="offline-tiny", cache_dir="...")   # movies=..., seed=... override
    builder.download_and_prepare()
    movies = builder.as_dataset(split="train")          # columns __key__, __url__, json, mp4

A recipe is a list of ``moviellm generate`` options, so every configuration is also a command
(``moviellm generate --movies N --out DIR <recipe options>``), recorded in the folder's ``pipeline.yaml``.
The movies are generated (resumably) into a dataset folder, by default under the builder's cache
directory or at ``output_dir``; that folder is exactly what ``moviellm push`` publishes
(:func:`make_dataset_folder` makes one without building Arrow files).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import datasets
from datasets.builder import Key

from ..errors import ConfigError
from ..features import movie_features
from ..shards import iter_tar_samples, resolve_shards

_VERSION = datasets.Version("1.0.0")


@dataclass(frozen=True)
class Recipe:
    """A named way to make movies: ``moviellm generate`` options plus a default movie count."""

    name: str
    description: str
    args: tuple[str, ...]
    movies: int

    @property
    def style_embeddings(self) -> bool:
        """Does every sample carry ``style.safetensors``? (The diffusers renderer learns a style unless told not to.)"""
        args = list(self.args)
        renderer = args[args.index("--renderer") + 1] if "--renderer" in args else "storyboard"
        style = args[args.index("--style") + 1] if "--style" in args else "train"
        return renderer == "diffusers" and style != "none"


RECIPES: dict[str, Recipe] = {r.name: r for r in (
    Recipe("offline-tiny", "4 tiny movies (2 acts x 2 scenes x 3 shots = 12 keyframes), procedural writer, "
           "128x96 storyboard frames; seconds on a CPU", ("--size", "tiny", "--width", "128", "--height", "96"), 4),
    Recipe("offline-small", "16 small movies (3x3x5 = 45 keyframes), procedural writer, 384x256 storyboard frames",
           ("--size", "small", "--width", "384", "--height", "256"), 16),
    Recipe("offline-reference", "10 movies of the MovieLLM size (11x11x11 = 1,331 keyframes), procedural writer, "
           "384x256 storyboard frames", ("--size", "reference", "--width", "384", "--height", "256"), 10),
    Recipe("sdxl-reference", "10 reference-size movies drawn by SDXL base + refiner with the MovieLLM keyframe recipe "
           "(40 steps, 1024x1024) and learned style embeddings; needs a GPU and the SDXL weights",
           ("--size", "reference", "--renderer", "diffusers", "--preset", "reference",
            "--width", "1024", "--height", "1024"), 10),
    Recipe("sdxl-fast", "as sdxl-reference, computed with the fast preset (batched, compiled: the same images up to "
           "half-precision rounding)",
           ("--size", "reference", "--renderer", "diffusers", "--preset", "fast", "--width", "1024", "--height", "1024"),
           10),
)}


@dataclass
class SyntheticMoviesConfig(datasets.BuilderConfig):
    """A recipe, optionally with another movie count, run seed or extra ``moviellm generate`` options.

    Args:
        recipe: name of a :data:`RECIPES` entry (defaults to the config name).
        movies: how many movies (default: the recipe's).
        seed: the run seed.
        extra_args: more ``moviellm generate`` options, appended to the recipe's (e.g. an LLM writer's).
        output_dir: where the dataset folder is generated (default: under the builder's cache directory).
    """

    recipe: str | None = None
    movies: int | None = None
    seed: int = 0
    extra_args: tuple[str, ...] = field(default_factory=tuple)
    output_dir: str | None = None


def _recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}.")
    return RECIPES[name]


def generate_arguments(recipe: str, movies: int | None = None, seed: int = 0, extra_args=()) -> list[str]:
    """The ``moviellm generate`` options of a recipe (without ``--out``)."""
    chosen = _recipe(recipe)
    return ["--movies", str(movies or chosen.movies), "--seed", str(seed), *chosen.args, *extra_args]


def make_dataset_folder(recipe: str, out: str | Path, movies: int | None = None, seed: int = 0, extra_args=(),
                        progress: bool = True) -> Path:
    """Generate (or continue generating) a recipe's movies into the dataset folder ``out``; return it."""
    from ..backends import build_renderer, build_writer
    from ..options import add_generate_arguments
    from ..pipeline import GenerateOptions, generate

    argv = ["generate", "--out", str(out), *generate_arguments(recipe, movies, seed, extra_args)]
    parser = argparse.ArgumentParser(prog="moviellm generate")
    add_generate_arguments(parser)  # the options of `moviellm generate`, defined once
    try:
        args = parser.parse_args(argv[1:])
    except SystemExit:
        raise ConfigError(f"recipe {recipe} with options {' '.join(extra_args)} does not parse as moviellm generate "
                          "options; check the extra options.") from None
    options = GenerateOptions(out=args.out, movies=args.movies, seed=args.seed, shard_bytes=args.shard_size,
                              crf=args.crf, command=" ".join(shlex.quote(a) for a in ["moviellm", *argv]))
    result = generate(options, build_writer(args), build_renderer(args), progress=progress)
    if not result.complete:
        reasons = "; ".join(f.reason for f in result.failed[:3])
        raise ConfigError(f"only {result.total_in_dataset} of {args.movies} movies of recipe {recipe} were made "
                          f"({reasons}); rerun to retry the missing ones.")
    return Path(out)


class SyntheticMovies(datasets.GeneratorBasedBuilder):
    """Synthetic long-video movies (MovieLLM-style): script JSON (with grounded QA) + keyframes as mp4 at 1 fps."""

    BUILDER_CONFIG_CLASS = SyntheticMoviesConfig
    VERSION = _VERSION
    BUILDER_CONFIGS = [SyntheticMoviesConfig(name=r.name, description=r.description, version=_VERSION)
                       for r in RECIPES.values()]
    DEFAULT_CONFIG_NAME = "offline-tiny"

    @property
    def recipe(self) -> Recipe:
        return _recipe(self.config.recipe or self.config.name)

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description=self.recipe.description,
            features=movie_features(with_style=self.recipe.style_embeddings),
            homepage="https://arxiv.org/abs/2403.01422",
            license="cc-by-4.0",
        )

    @property
    def dataset_folder(self) -> Path:
        """Where the movies are generated: ``output_dir``, or a folder per recipe settings in the cache."""
        if self.config.output_dir:
            return Path(self.config.output_dir)
        argv = generate_arguments(self.recipe.name, self.config.movies, self.config.seed, self.config.extra_args)
        digest = hashlib.sha256(json.dumps(argv).encode()).hexdigest()[:10]
        return Path(self._cache_dir_root) / "moviellm-movies" / f"{self.recipe.name}-{digest}"

    def _split_generators(self, dl_manager):
        folder = make_dataset_folder(self.recipe.name, self.dataset_folder, self.config.movies, self.config.seed,
                                     self.config.extra_args, progress=False)
        return [datasets.SplitGenerator(name=datasets.Split.TRAIN, gen_kwargs={"shards": resolve_shards(folder)})]

    def _generate_shards(self, shards):
        yield from (str(s) for s in shards)

    def _generate_examples(self, shards):
        with_style = self.recipe.style_embeddings
        for shard_index, shard in enumerate(shards):
            for index, (key, members) in enumerate(iter_tar_samples(shard)):
                example = {"__key__": key, "__url__": str(shard), "json": json.loads(members["json"]),
                           "mp4": {"bytes": members["mp4"], "path": f"{key}.mp4"}}
                if with_style:
                    example["style.safetensors"] = members.get("style.safetensors")
                yield Key(shard_index, index), example
