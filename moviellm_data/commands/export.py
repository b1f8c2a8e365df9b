"""``moviellm export llamavid DIR --out OUT``: training files that LLaMA-VID-style trainers read directly."""

from __future__ import annotations

import argparse

from ..argtypes import positive_int
from ..cli import movies, plural, verb
from ..options import add_progress_option
from ..script import QA_TYPES


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("format", choices=["llamavid"],
                   help="llamavid: LongVideoQA conversation JSON (LLaVA layout) plus per-movie features or frames; "
                        "video paths are relative to OUT (videos/<id>.<ext>), the trainer's --video_folder.")
    p.add_argument("folder", metavar="DIR", help="The dataset folder (made by `moviellm generate` or `moviellm pull`).")
    p.add_argument("--out", required=True, metavar="OUT", help="Export folder: new, empty, or an earlier export with the same options.")
    p.add_argument("--features", choices=["eva", "frames"], default=None,
                   help="eva: EVA tower output per movie as safetensors, float16 [T, 257, 1408] (needs --model and the "
                        "model package); frames: the movie's mp4 at 1 fps, decoded and counted before it is copied, "
                        "for trainers that run the vision tower themselves (moviellm train); the original LLaMA-VID "
                        "trainer reads an mp4 as a SHORT video (its per-frame placeholders collapse to one <image>), "
                        "so give it --model --legacy-pickle instead. Default: eva with --model, else frames.")
    p.add_argument("--model", default=None, metavar="PATH_OR_ID",
                   help="LLaMA-VID checkpoint (folder or Hub id) whose vision tower makes the EVA features.")
    p.add_argument("--legacy-pickle", action="store_true",
                   help="Write the original .pkl files ({feats, inputs}) and single-<image> conversations instead of "
                        "safetensors, as the original LLaMA-VID stage-3 trainer reads them (--video_folder OUT: the "
                        "video paths are videos/<id>.pkl). Pickle files execute code when loaded: use only with "
                        "trainers that need them.")
    p.add_argument("--qa-types", nargs="+", choices=QA_TYPES, default=None, metavar="TYPE",
                   help=f"Export only these QA types ({', '.join(QA_TYPES)}). Default: all.")
    p.add_argument("--prompt", choices=["movie", "plain"], default="movie",
                   help='movie: wrap the movie in the inference prompt ("Below is a movie. ..."); plain: no wrapper. '
                        "Default: movie.")
    p.add_argument("--tokens-per-frame", type=positive_int, default=2,
                   help="Placeholders per frame in the conversation (LLaMA-VID's video_token). Default: 2.")
    p.add_argument("--batch-size", type=positive_int, default=48, help="Frames per vision-tower batch. Default: 48.")
    p.add_argument("--device", default=None, help="Torch device for the vision tower. Default: cuda if available, else cpu.")
    add_progress_option(p)


@verb("export", "Export a dataset for training: LLaMA-VID LongVideoQA JSON with per-movie features or frames.", _arguments)
def run_export(args: argparse.Namespace) -> int:
    from ..export import ExportOptions, export_llamavid

    features = args.features or ("eva" if args.model else "frames")
    options = ExportOptions(out=args.out, features=features, model=args.model, legacy_pickle=args.legacy_pickle,
                            qa_types=args.qa_types, prompt=args.prompt, tokens_per_frame=args.tokens_per_frame,
                            batch_size=args.batch_size, device=args.device)
    result = export_llamavid(args.folder, options, progress=not args.no_progress)
    shape = f", features {result.feature_shape}" if result.feature_shape else ""
    print(f"{result.json_path}: {plural(result.samples, 'sample')} from {movies(result.movies)} ({result.written} written, "
          f"{result.skipped} already there{shape}); --video_folder {result.out}.")
    return 0
