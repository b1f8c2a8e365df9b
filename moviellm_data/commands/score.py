"""``moviellm score DIR``: prompt alignment and character and style consistency of rendered movies.

Writes ``DIR/scores.jsonl`` (per movie, with per-keyframe CLIP-T) and ``DIR/scores.json`` (the dataset summary),
and refreshes the dataset card with the summary. ``--against OTHER`` also scores OTHER (the same scripts rendered
another way) and writes a comparison table and chart into DIR. Torch and transformers load only when it runs.
"""

from __future__ import annotations

import argparse

from ..argtypes import positive_int
from ..cli import verb
from ..errors import ConfigError
from ..options import add_progress_option
from ..scoring import DEFAULT_CLIP_MODEL, ScoreSettings, compare_datasets, score_dataset


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", metavar="DIR", help="A dataset folder of rendered movies (moviellm generate / render).")
    p.add_argument("--clip-model", default=DEFAULT_CLIP_MODEL, metavar="ID",
                   help=f"CLIP-like text-image model for prompt alignment (CLIP-T): Hub id or folder. "
                        f"Default: {DEFAULT_CLIP_MODEL}.")
    p.add_argument("--image-model-for-consistency", default=None, metavar="ID",
                   help="Image model for character and style consistency, e.g. facebook/dinov2-base (DINO-I): any "
                        "transformers image model, Hub id or folder. Default: the CLIP model's image tower (CLIP-I).")
    p.add_argument("--against", default=None, metavar="OTHER_DIR",
                   help="Another rendering of the same scripts (e.g. the reference preset): scored too, then compared "
                        "movie by movie in DIR/comparison-OTHER.md (table) and .png (chart).")
    p.add_argument("--batch-size", type=positive_int, default=64, help="Keyframes per forward pass. Default: 64.")
    p.add_argument("--device", default=None, help="cuda, cuda:1, cpu... Default: cuda when available.")
    p.add_argument("--rescore", action="store_true",
                   help="Score every movie again (needed when the folder was scored with other models).")
    add_progress_option(p)


@verb("score", "Score rendered movies: prompt alignment (CLIP-T), character and style consistency; compare two renderings.",
      _arguments)
def run_score(args: argparse.Namespace) -> int:
    from ..kinds import refresh_card

    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as err:
        raise ConfigError(f"moviellm score needs torch and transformers ({err.name} is missing); "
                          "install torch, then pip install 'moviellm[score]'.") from None

    settings = ScoreSettings(clip_model=args.clip_model, consistency_model=args.image_model_for_consistency,
                             batch_size=args.batch_size, device=args.device)
    progress = not args.no_progress
    if not progress:  # also no loading bars from transformers
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
    if args.against:
        comparison = compare_datasets(args.folder, args.against, settings, progress=progress, rescore=args.rescore)
        summary = comparison.summary
    else:
        summary = score_dataset(args.folder, settings, progress=progress, rescore=args.rescore)
    refresh_card(args.folder, contact_sheet=False)
    print(f"{args.folder}: scored {summary['movies']} movies, {summary['keyframes']} keyframes.")
    for metric in summary["metrics"].values():
        mean = "-" if metric["mean"] is None else f"{metric['mean']:.4f}"
        print(f"  {metric['label']}: {mean} over {metric['count']} {metric['over']}")
    if args.against:
        refresh_card(args.against, contact_sheet=False)
        print()
        print(comparison.table)
        print(f"\nwritten: {', '.join(str(p) for p in comparison.paths)}")
    return 0
