"""Command-line options that several verbs (and the builders) share, each defined once.

A verb module adds the groups it needs (``add_progress_option(p)``, ``add_packing_options(p)``); the
options of ``moviellm generate`` are here too, because the synthetic-movies builder parses its recipes
with exactly them. Nothing here imports torch, diffusers or PyAV, so ``moviellm --help`` stays fast.
"""

from __future__ import annotations

import argparse

from .argtypes import byte_size
from .limits import MAX_CRF, MAX_FRAMES_PER_MOVIE, MAX_MOVIES, MAX_THEME_CHARS, MIN_CRF, crf_value, movies_count
from .sizes import story_size
from .backends import add_backend_arguments

#: ``--shard-size``'s default, as typed; it parses to :data:`moviellm_data.folder.DEFAULT_SHARD_BYTES`.
DEFAULT_SHARD_SIZE = "1GB"
DEFAULT_CRF = 18


def add_progress_option(parser: argparse.ArgumentParser) -> None:
    """``--no-progress``."""
    parser.add_argument("--no-progress", action="store_true", help="Do not draw a progress bar.")


def add_packing_options(parser: argparse.ArgumentParser) -> None:
    """``--shard-size`` and ``--crf``: how movies are packed into a dataset folder."""
    parser.add_argument("--shard-size", type=byte_size, default=DEFAULT_SHARD_SIZE,
                        help=f"Target size of one tar shard, e.g. 1GB or 200MB. Default: {DEFAULT_SHARD_SIZE}.")
    parser.add_argument("--crf", type=crf_value, default=DEFAULT_CRF,
                        help=f"H.264 quality from {MIN_CRF} (lossless) to {MAX_CRF}, lower is larger and closer. "
                             f"Default: {DEFAULT_CRF}.")


def add_generate_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``moviellm generate`` (what a synthetic-movies recipe is made of)."""
    p = parser
    p.add_argument("--movies", type=movies_count, required=True,
                   help=f"How many movies the dataset should hold (at most {MAX_MOVIES:,}).")
    p.add_argument("--out", required=True, help="Dataset folder: new, empty, or an earlier run of the same recipe.")
    p.add_argument("--size", type=story_size, default="tiny",
                   help="Movie size: tiny (2x2x3 = 12 frames), small (3x3x5 = 45), reference (11x11x11 = 1,331) "
                        f"or ACTSxSCENESxSHOTS, at most {MAX_FRAMES_PER_MOVIE:,} frames. Default: tiny.")
    p.add_argument("--seed", type=int, default=0, help="Run seed; movie i's seed derives from it and i. Default: 0.")
    themes = p.add_mutually_exclusive_group()
    themes.add_argument("--themes", nargs="+", metavar="THEME",
                        help='Themes assigned to movies in turn, e.g. --themes "a love story" "a heist" '
                             f"(at most {MAX_THEME_CHARS} characters each).")
    themes.add_argument("--themes-file", metavar="FILE", help="A text file with one theme per line.")
    add_packing_options(p)
    p.add_argument("--dialogue-ratio", type=float, default=0.5,
                   help="Share of shots with a spoken line, for every writer. Default: 0.5.")
    add_progress_option(p)
    add_backend_arguments(p)
