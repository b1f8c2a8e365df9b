"""Command-line options of the ``openai`` writer backend (``--writer openai``) and building the writer from them.

The chat-model options are the client's (:mod:`moviellm_data.llm.options`, under the ``llm`` prefix); the writer
adds ``--llm-prompts``. This module imports no openai code: building the parser stays cheap.
"""

from __future__ import annotations

import argparse

from ..errors import ConfigError
from ..llm.options import DEFAULT_CACHE_NAME, ChatRole, add_chat_arguments, chat_cache_path, chat_settings_from_args

WRITER = ChatRole(prefix="llm", needed_by="--writer openai",
                  unfinished="movies not finished are reported failed and a rerun continues from the cache",
                  recorded_in="pipeline.yaml", cache_name=DEFAULT_CACHE_NAME, temperature=0.7, max_tokens=4096,
                  batch_unit="Each level of all movies becomes one batch, so plan for several batch turnarounds per run.")


def add_openai_writer_arguments(group: argparse._ArgumentGroup) -> None:
    """The ``--llm-*`` options (plus --concurrency, --max-cost, --temperature, --price-per-mtok)."""
    add_chat_arguments(group, WRITER)
    group.add_argument("--llm-prompts", metavar="DIR",
                       help="A folder whose <name>.txt files replace the built-in prompt templates "
                            "(system, outline, scenes, shots, movie_qa, repair, json_mode).")


def build_openai_writer(args: argparse.Namespace):
    """The :class:`~moviellm_data.writers.llm_writer.LLMWriter` the options describe, or a ConfigError."""
    from .llm_writer import LLMWriter

    ratio = getattr(args, "dialogue_ratio", 0.5)
    settings = chat_settings_from_args(args, WRITER)
    if not 0.0 <= ratio <= 1.0:
        raise ConfigError(f"--dialogue-ratio must be between 0 and 1, got {ratio}.")
    return LLMWriter(
        settings,
        size=args.size,
        dialogue_ratio=ratio,
        cache_path=chat_cache_path(args, WRITER, args.out),
        prompts_dir=args.llm_prompts,
    )
