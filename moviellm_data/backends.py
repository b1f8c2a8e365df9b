"""Writer and renderer backends the command line can choose between.

Each backend contributes its own options to ``moviellm generate`` (and ``render``) and builds its object
from the parsed arguments, so adding a backend never touches the verbs themselves. Backends import
their heavy dependencies (openai, diffusers, torch) only when built.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

from .errors import MovieLLMError
from .limits import MAX_FRAME_SIDE, MIN_FRAME_SIDE, frame_side
from .renderers.base import Renderer
from .writers.base import Writer


@dataclass(frozen=True)
class Backend:
    name: str
    help: str
    add_arguments: Callable[[argparse._ArgumentGroup], None]
    build: Callable[[argparse.Namespace], object]


WRITERS: dict[str, Backend] = {}
RENDERERS: dict[str, Backend] = {}


def register_writer(backend: Backend) -> Backend:
    WRITERS[backend.name] = backend
    return backend


def register_renderer(backend: Backend) -> Backend:
    RENDERERS[backend.name] = backend
    return backend


# ------------------------------------------------------------------------------------ built-in backends


def _procedural_arguments(group: argparse._ArgumentGroup) -> None:
    """The procedural writer needs nothing beyond the common --size, --seed and --dialogue-ratio."""


def _build_procedural(args: argparse.Namespace) -> Writer:
    from .writers.procedural import ProceduralWriter

    if not 0.0 <= args.dialogue_ratio <= 1.0:
        raise MovieLLMError(f"--dialogue-ratio must be between 0 and 1, got {args.dialogue_ratio}.")
    return ProceduralWriter(size=args.size, dialogue_ratio=args.dialogue_ratio)


def _storyboard_arguments(group: argparse._ArgumentGroup) -> None:
    sides = f"an even number of {MIN_FRAME_SIDE} to {MAX_FRAME_SIDE}"
    group.add_argument("--width", type=frame_side, default=None,
                       help=f"Frame width in pixels, {sides}. Default: 384 (storyboard), the preset's (diffusers).")
    group.add_argument("--height", type=frame_side, default=None,
                       help=f"Frame height in pixels, {sides}. Default: 256 (storyboard), the preset's (diffusers).")


def _build_storyboard(args: argparse.Namespace) -> Renderer:
    from .renderers.storyboard import StoryboardRenderer

    return StoryboardRenderer(width=384 if args.width is None else args.width,
                              height=256 if args.height is None else args.height)


register_writer(Backend("procedural", "offline, deterministic genre grammars (default)", _procedural_arguments, _build_procedural))
register_renderer(Backend("storyboard", "offline drawn storyboard frames (default)", _storyboard_arguments, _build_storyboard))


def add_backend_arguments(parser: argparse.ArgumentParser, writers: bool = True) -> None:
    """``--writer`` / ``--renderer`` and every backend's own option group."""
    if writers:
        parser.add_argument("--writer", choices=sorted(WRITERS), default="procedural",
                            help="Who writes the scripts: " + "; ".join(f"{b.name}: {b.help}" for b in WRITERS.values()))
    parser.add_argument("--renderer", choices=sorted(RENDERERS), default="storyboard",
                        help="Who draws the frames: " + "; ".join(f"{b.name}: {b.help}" for b in RENDERERS.values()))
    for kind, table in (("writer", WRITERS if writers else {}), ("renderer", RENDERERS)):
        for backend in table.values():
            backend.add_arguments(parser.add_argument_group(f"{backend.name} {kind} options"))


def build_writer(args: argparse.Namespace) -> Writer:
    return WRITERS[args.writer].build(args)


def build_renderer(args: argparse.Namespace) -> Renderer:
    return RENDERERS[args.renderer].build(args)


# ------------------------------------------------------------- LLM writer: any OpenAI-compatible endpoint
# (options and building live in moviellm_data/writers/llm_writer_cli.py, which imports no openai code)
from .writers.llm_writer_cli import add_openai_writer_arguments, build_openai_writer  # noqa: E402

register_writer(Backend("openai", "an LLM behind any OpenAI-compatible endpoint (OpenAI, Azure, vLLM, Ollama, "
                                  "llama.cpp); see the openai writer options", add_openai_writer_arguments,
                        build_openai_writer))


# ------------------------------------------------------------- diffusers renderer: SDXL and any text-to-image model
# (options and building live in moviellm_data/renderers/diffusion_cli.py, which imports no torch or diffusers)
from .renderers import diffusion_cli as _diffusion_cli  # noqa: E402

register_renderer(Backend("diffusers", _diffusion_cli.HELP, _diffusion_cli.add_arguments, _diffusion_cli.build))
