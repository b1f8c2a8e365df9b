"""``moviellm convert-llamavid``: original LLaMA-VID / MovieLLM checkpoints to a self-contained folder."""

from __future__ import annotations

import argparse

from ..cli import verb
from ..errors import MovieLLMError


def _arguments(parser: argparse.ArgumentParser) -> None:
    # Plain argparse, so --help works on the core install; imported here, when this verb's parser is built, because
    # importing any moviellm_model module loads torch where it is installed (the Auto-class registration).
    from moviellm_model.convert_llamavid_options import add_arguments

    add_arguments(parser)


@verb(
    "convert-llamavid",
    "Convert an original LLaMA-VID or MovieLLM checkpoint into a transformers folder that from_pretrained loads.",
    _arguments,
)
def run_convert(args: argparse.Namespace) -> int:
    try:
        from moviellm_model.convert_llamavid_original import run_from_args
    except ImportError as err:
        raise MovieLLMError(
            f"convert-llamavid needs the model extra ({err.name} is missing); install it with "
            "`pip install 'moviellm[model]'`."
        ) from None
    return run_from_args(args)
