"""``moviellm render SCRIPTS --out DIR``: render scripts written earlier into a new dataset folder.

SCRIPTS are movie-script JSON files (one script each, or JSON lines), folders of them, dataset folders
or ``.tar`` shards made earlier (their scripts are read, their frames ignored). The scripts keep their
ids; they go through the same staging, sharding, manifest and card machinery as ``generate``, so an
interrupted render continues where it stopped when the same command is run again.
"""

from __future__ import annotations

import argparse
import sys

from ..backends import add_backend_arguments, build_renderer
from ..cli import movies, verb
from ..options import add_packing_options, add_progress_option


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("scripts", nargs="+", metavar="SCRIPTS",
                   help="Movie-script .json files, .jsonl files of scripts, folders of them, dataset folders or .tar shards.")
    p.add_argument("--out", required=True, help="New dataset folder (or an earlier render of the same scripts, to continue).")
    add_packing_options(p)
    add_progress_option(p)
    add_backend_arguments(p, writers=False)


@verb("render", "Render movie scripts written earlier (files, folders, datasets, shards) into a new dataset folder.", _arguments)
def run_render(args: argparse.Namespace) -> int:
    from ..pipeline import command_line, render
    from ..writers.prewritten import read_scripts

    # Read the scripts before loading a renderer, so a wrong path costs no model load.
    scripts = read_scripts(args.scripts)
    renderer = build_renderer(args)
    result = render(args.scripts, args.out, renderer, shard_bytes=args.shard_size, crf=args.crf,
                    progress=not args.no_progress, command=command_line(args.argv), scripts=scripts)
    print(f"{result.out}: rendered {movies(result.written)}, {result.skipped} already there, "
          f"{len(result.failed)} failed; the dataset holds {movies(result.total_in_dataset)}.")
    for failure in result.failed:
        print(f"  failed {failure.request.id}: {failure.reason}", file=sys.stderr)
    return 1 if result.failed else 0
