"""``moviellm preview DIR --out HTMLDIR``: static pages to look at movies before trusting them."""

from __future__ import annotations

import argparse

from ..argtypes import positive_int
from ..cli import movies, verb
from ..options import add_progress_option


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", metavar="DIR", help="The dataset folder (or one .tar shard).")
    p.add_argument("--out", required=True, metavar="HTMLDIR", help="Folder for the pages: new, empty, or an earlier preview.")
    p.add_argument("--movies", type=positive_int, default=None, help="Preview only the first N movies. Default: all.")
    p.add_argument("--thumb-width", type=positive_int, default=320,
                   help="Width in pixels of the keyframe images (never enlarged). Default: 320.")
    add_progress_option(p)


@verb("preview", "Write a static HTML preview of a dataset: keyframes with subtitles, QA with evidence, outline.", _arguments)
def run_preview(args: argparse.Namespace) -> int:
    from ..preview import build_preview

    result = build_preview(args.folder, args.out, max_movies=args.movies, thumb_width=args.thumb_width,
                           progress=not args.no_progress)
    print(f"{result.index}: {movies(len(result.movies))}; open it in a browser.")
    return 0
