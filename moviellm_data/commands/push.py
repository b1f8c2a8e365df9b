"""``moviellm push DIR --repo ORG/NAME``: publish a dataset folder, or a saved model folder, on the Hugging Face Hub."""

from __future__ import annotations

import argparse
import sys

from ..argtypes import positive_int
from ..cli import verb
from ..hub import DEFAULT_FILES_PER_COMMIT
from ..options import add_progress_option


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", metavar="DIR",
                   help="A dataset folder (made by `moviellm generate` or a builder), or a saved model folder "
                        "(config.json, weights, README.md card), which becomes a model repository.")
    p.add_argument("--repo", required=True, metavar="ORG/NAME", help="The dataset or model repository on the Hub.")
    p.add_argument("--private", action="store_true", help="Create the repository private (an existing one keeps its visibility).")
    p.add_argument("--files-per-commit", type=positive_int, default=DEFAULT_FILES_PER_COMMIT,
                   help="Files per commit when committing in batches (huggingface_hub 2.x); a rerun after an "
                        f"interruption resends at most one batch. Default: {DEFAULT_FILES_PER_COMMIT}.")
    p.add_argument("--endpoint", default=None, metavar="URL",
                   help="The Hub to publish to. Default: $HF_ENDPOINT, else https://huggingface.co. "
                        "The token comes from $HF_TOKEN or `hf auth login`, never from the command line.")
    p.add_argument("--uploader", choices=("auto", "large-folder", "commits"), default="auto",
                   help="How files travel: large-folder = huggingface_hub's upload_large_folder (1.x only); "
                        "commits = batches of --files-per-commit, resumed by comparing hashes with the Hub. "
                        "Default: auto (large-folder where huggingface_hub has it, else commits).")
    p.add_argument("--no-contact-sheet", action="store_true", help="Do not draw contact_sheet.png for the card.")
    add_progress_option(p)


@verb("push", "Publish a dataset or model folder on the Hugging Face Hub (resumable; the card goes last).", _arguments)
def run_push(args: argparse.Namespace) -> int:
    from ..hub import is_model_folder, push_dataset, push_model

    if is_model_folder(args.folder):
        result = push_model(args.folder, args.repo, private=args.private, endpoint=args.endpoint,
                            files_per_commit=args.files_per_commit, uploader=args.uploader,
                            progress=not args.no_progress)
    else:
        result = push_dataset(args.folder, args.repo, private=args.private, endpoint=args.endpoint,
                              files_per_commit=args.files_per_commit, uploader=args.uploader,
                              progress=not args.no_progress, contact_sheet=not args.no_contact_sheet)
    if result.commits:
        print(f"{result.url}: uploaded {len(result.uploaded)} files in {result.commits} commits; "
              f"{len(result.unchanged)} were already there.")
    else:
        print(f"{result.url}: already up to date ({len(result.unchanged)} files); nothing was committed.")
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if result.stale:
        print(f"warning: the repository also holds {len(result.stale)} shard(s) this folder does not have "
              f"(e.g. {result.stale[0]}); they are still part of the dataset.", file=sys.stderr)
    return 0
