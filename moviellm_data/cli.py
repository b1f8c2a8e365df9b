"""The ``moviellm`` command: one verb per job.

Every user mistake is reported as one sentence on stderr with a non-zero exit status, never as a
traceback; an interrupted job is continued by running the same command again.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from . import __version__
from .argtypes import byte_size, positive_int
from .backends import add_backend_arguments, build_renderer, build_writer
from .errors import MovieLLMError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130

# Each verb registers (name, help, add_arguments, run); modules add their own verbs here.
_VERBS: list[tuple[str, str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = []


def verb(name: str, help: str, add_arguments: Callable[[argparse.ArgumentParser], None]):
    """Register ``run(args) -> exit code`` as the sub-command ``moviellm <name>``.

    A verb that takes free ``--KEY VALUE`` options (e.g. recipe overrides) sets ``run.accepts_extra_options = True``
    and finds them in ``args.extra_options``; other verbs reject unknown options.
    """

    def register(run: Callable[[argparse.Namespace], int]):
        _VERBS.append((name, help, add_arguments, run))
        return run

    return register


# ------------------------------------------------------------------------------------------- generate


def _generate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--movies", type=positive_int, required=True, help="How many movies the dataset should hold.")
    p.add_argument("--out", required=True, help="Dataset folder: new, empty, or an earlier run of the same recipe.")
    p.add_argument("--size", default="tiny",
                   help="Movie size: tiny (2x2x3 = 12 frames), small (3x3x5 = 45), reference (11x11x11 = 1,331) "
                        "or ACTSxSCENESxSHOTS. Default: tiny.")
    p.add_argument("--seed", type=int, default=0, help="Run seed; movie i's seed derives from it and i. Default: 0.")
    themes = p.add_mutually_exclusive_group()
    themes.add_argument("--themes", nargs="+", metavar="THEME",
                        help='Themes assigned to movies in turn, e.g. --themes "a love story" "a heist".')
    themes.add_argument("--themes-file", metavar="FILE", help="A text file with one theme per line.")
    p.add_argument("--shard-size", type=byte_size, default="1GB",
                   help="Target size of one tar shard, e.g. 1GB or 200MB. Default: 1GB.")
    p.add_argument("--crf", type=int, default=18, help="H.264 quality, lower is larger and closer. Default: 18.")
    p.add_argument("--dialogue-ratio", type=float, default=0.5,
                   help="Share of shots with a spoken line, for every writer. Default: 0.5.")
    p.add_argument("--no-progress", action="store_true", help="Do not draw a progress bar.")
    add_backend_arguments(p)


@verb("generate", "Write, render and pack synthetic movies into a dataset folder.", _generate_arguments)
def run_generate(args: argparse.Namespace) -> int:
    from .pipeline import GenerateOptions, command_line, generate, read_themes_file

    themes = read_themes_file(args.themes_file) if args.themes_file else args.themes
    options = GenerateOptions(out=args.out, movies=args.movies, seed=args.seed, themes=themes,
                              shard_bytes=args.shard_size, crf=args.crf, command=command_line())
    writer = build_writer(args)
    renderer = build_renderer(args)
    result = generate(options, writer, renderer, progress=not args.no_progress)
    print(f"{result.out}: wrote {result.written} movies, {result.skipped} already there, "
          f"{len(result.failed)} failed; the dataset holds {result.total_in_dataset} movies.")
    usage = getattr(writer, "usage", None)
    if usage is not None and usage.requests:
        print(f"writer usage: {usage.summary()}")
    for failure in result.failed:
        print(f"  failed {failure.request.id} ({failure.request.theme}): {failure.reason}", file=sys.stderr)
    return 1 if result.failed else 0


# ----------------------------------------------------------------------------------------------- main


def _load_command_modules() -> None:
    """Import every module of :mod:`moviellm_data.commands` so that their verbs register."""
    import importlib
    import pkgutil

    from . import commands

    for module in pkgutil.iter_modules(commands.__path__):
        importlib.import_module(f"{commands.__name__}.{module.name}")


class _Parser(argparse.ArgumentParser):
    """Reports a bad option as one sentence (with a pointer to --help) instead of the whole usage text."""

    def error(self, message: str):
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see `{self.prog} --help`).\n")


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser of ``moviellm``; with ``argv``, only the verb it names gets its options built.

    Some verbs' options come from heavy or optional modules (the model converter imports torch and
    transformers): building only the chosen verb keeps ``moviellm generate`` and ``moviellm --help`` from
    paying for them, or failing on an install without the optional extras. Without ``argv`` every verb is
    built (for callers that parse several command lines with one parser).
    """
    _load_command_modules()
    build_all = argv is None
    chosen = None if build_all else _chosen_verb(argv)
    parser = _Parser(
        prog="moviellm",
        description="Generate synthetic movies for long-video training, publish them, and train and "
                    "evaluate LLaMA-VID on them.",
    )
    parser.add_argument("--version", action="version", version=f"moviellm {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="Log more.")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True, parser_class=_Parser)
    for name, help_text, add_arguments, run in _VERBS:
        p = sub.add_parser(name, help=help_text, description=help_text)
        if build_all or chosen == name:
            add_arguments(p)
        p.set_defaults(run=run)
    return parser


def _chosen_verb(argv: Sequence[str]) -> str | None:
    """The verb named in ``argv`` (its first word that is not an option), or None when it names none."""
    names = {name for name, *_ in _VERBS}
    for word in argv:
        if not word.startswith("-"):
            return word if word in names else None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    _load_command_modules()
    prog = " ".join(filter(None, ["moviellm", _chosen_verb(argv)]))
    try:
        parser = build_parser(argv)
        args, extra = parser.parse_known_args(argv)
        if extra and not getattr(getattr(args, "run", None), "accepts_extra_options", False):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.extra_options = extra
        logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                            format="%(levelname)s %(name)s: %(message)s")
        return args.run(args)
    except MovieLLMError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; run the same command again to continue.", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    # Run as `python -m moviellm_data.cli`, this file is the module `__main__`, while the command modules
    # register their verbs into `moviellm_data.cli`: call that module's main so every verb is known.
    from moviellm_data.cli import main as _main

    sys.exit(_main())
