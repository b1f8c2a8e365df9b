"""``moviellm convert-llamavid``: original LLaMA-VID / MovieLLM checkpoints to a self-contained folder."""

from __future__ import annotations

import argparse

from ..cli import verb
from ..errors import MovieLLMError


def _arguments(parser: argparse.ArgumentParser) -> None:
    # The options belong to the converter, which needs the model extra (torch, transformers).
    try:
        from moviellm_model.convert_llamavid_original import add_arguments
    except ImportError as err:
        raise MovieLLMError(
            f"convert-llamavid needs the model extra ({err.name} is missing); install it with "
            "`pip install 'moviellm[model]'`."
        ) from None
    add_arguments(parser)


@verb(
    "convert-llamavid",
    "Convert an original LLaMA-VID or MovieLLM checkpoint into a transformers folder that from_pretrained loads.",
    _arguments,
)
def run_convert(args: argparse.Namespace) -> int:
    from moviellm_model.convert_llamavid_original import run_from_args

    return run_from_args(args)
