"""``moviellm pull ORG/NAME --out DIR``: download a published dataset."""

from __future__ import annotations

import argparse

from ..cli import verb


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("repo", metavar="ORG/NAME", help="The dataset repository on the Hub.")
    p.add_argument("--out", required=True, metavar="DIR", help="Folder to download into: new, empty, or an earlier pull.")
    p.add_argument("--revision", default=None, help="A branch, tag or commit. Default: main.")
    p.add_argument("--endpoint", default=None, metavar="URL",
                   help="The Hub to download from. Default: $HF_ENDPOINT, else https://huggingface.co.")


@verb("pull", "Download a dataset published on the Hugging Face Hub (an interrupted download continues).", _arguments)
def run_pull(args: argparse.Namespace) -> int:
    from ..hub import pull_dataset

    path = pull_dataset(args.repo, args.out, revision=args.revision, endpoint=args.endpoint)
    files = [p for p in path.rglob("*") if p.is_file() and ".cache" not in p.relative_to(path).parts]
    print(f"{path}: {len(files)} files of {args.repo}.")
    return 0
