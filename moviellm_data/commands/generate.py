"""``moviellm generate``: write, render and pack synthetic movies into a dataset folder."""

from __future__ import annotations

import argparse
import sys

from ..cli import movies, verb
from ..options import add_generate_arguments


@verb("generate", "Write, render and pack synthetic movies into a dataset folder.", add_generate_arguments)
def run_generate(args: argparse.Namespace) -> int:
    from ..backends import build_renderer, build_writer
    from ..pipeline import GenerateOptions, command_line, generate, read_themes_file

    themes = read_themes_file(args.themes_file) if args.themes_file else args.themes
    options = GenerateOptions(out=args.out, movies=args.movies, seed=args.seed, themes=themes,
                              shard_bytes=args.shard_size, crf=args.crf, command=command_line(args.argv))
    writer = build_writer(args)
    renderer = build_renderer(args)
    result = generate(options, writer, renderer, progress=not args.no_progress)
    print(f"{result.out}: wrote {movies(result.written)}, {result.skipped} already there, "
          f"{len(result.failed)} failed; the dataset holds {movies(result.total_in_dataset)}.")
    usage = getattr(writer, "usage", None)
    if usage is not None and usage.requests:
        print(f"writer usage: {usage.summary()}")
    for failure in result.failed:
        print(f"  failed {failure.request.id} ({failure.request.theme}): {failure.reason}", file=sys.stderr)
    return 1 if result.failed else 0
