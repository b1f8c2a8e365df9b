"""The ``moviellm`` command: one verb per job.

Every user mistake is reported as one sentence on stderr with a non-zero exit status, never as a
traceback; an interrupted job is continued by running the same command again.

Exit statuses: 0 done; 1 done in part (a verb reports what failed, e.g. movies the writer gave up on); 2 a mistake in
the command (options, paths, recipes); 3 the system or a codec library failed (a full disk, an unwritable folder, a
file that cannot be read or encoded: the sentence names the path or the stage); 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from . import __version__
from .errors import MovieLLMError, SystemFailure, describe_os_error, library_errors

EXIT_USER_ERROR = 2
EXIT_SYSTEM_ERROR = 3
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


def plural(count: int, noun: str, plural_form: str | None = None) -> str:
    """``1 movie``, ``2 movies``: a count with its noun, for the one-line summaries verbs print."""
    return f"{count} {noun if count == 1 else (plural_form or noun + 's')}"


def movies(count: int) -> str:
    return plural(count, "movie")


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
    parser.add_argument("-v", "--verbose", action="store_true", help="Log more (also accepted after the verb).")
    # `-v` after the verb too (`moviellm generate -v ...`); SUPPRESS keeps a -v given before the verb.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="Log more.")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True, parser_class=_Parser)
    # `generate`, the job a newcomer runs first, heads the list; the others follow in registration order.
    for name, help_text, add_arguments, run in sorted(_VERBS, key=lambda entry: entry[0] != "generate"):
        p = sub.add_parser(name, help=help_text, description=help_text, parents=[common])
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
        args.argv = list(argv)  # what was parsed, for recipes that record their command (not sys.argv: main(argv))
        logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                            format="%(levelname)s %(name)s: %(message)s")
        return args.run(args)
    except SystemFailure as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return EXIT_SYSTEM_ERROR
    except MovieLLMError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except library_errors() as err:  # not wrapped in a `stage` on its way: name what the error names
        detail = describe_os_error(err) if isinstance(err, OSError) else (str(err).strip().splitlines() or [""])[0]
        print(f"{prog}: error: {detail or type(err).__name__}; fix the cause and run the same command again.",
              file=sys.stderr)
        return EXIT_SYSTEM_ERROR
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; run the same command again to continue.", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    # Run as `python -m moviellm_data.cli`, this file is the module `__main__`, while the command modules
    # register their verbs into `moviellm_data.cli`: call that module's main so every verb is known.
    from moviellm_data.cli import main as _main

    sys.exit(_main())
