"""User-facing errors.

Every mistake a user can make (a bad option, a missing file, a corrupt shard) is raised as a
:class:`MovieLLMError` whose message is one sentence saying what is wrong and what to do. The command
line prints that sentence and exits non-zero instead of showing a traceback.
"""

from __future__ import annotations


class MovieLLMError(Exception):
    """Base class of every error whose message is meant for the user."""


class ScriptValidationError(MovieLLMError, ValueError):
    """A movie script (JSON or Python object) breaks the movie contract."""


class ShardError(MovieLLMError):
    """A shard or dataset folder cannot be read or written."""


class ConfigError(MovieLLMError, ValueError):
    """An option or recipe value is invalid."""


class SystemFailure(MovieLLMError):
    """The operating system or a codec library failed while moviellm worked: a full disk, a folder that cannot be
    written, a file that cannot be read or a video that cannot be encoded. Not a mistake in the options: the command
    line exits with its own status (:data:`moviellm_data.cli.EXIT_SYSTEM_ERROR`), and a rerun of the same command
    continues once the cause is fixed."""


def describe_os_error(err: OSError) -> str:
    """``No space left on device (/data/movies/x.tar)``: the reason, and the file when the error names one."""
    reason = err.strerror or str(err) or type(err).__name__
    names = [str(n) for n in (err.filename, getattr(err, "filename2", None)) if n]
    return f"{reason} ({', '.join(names)})" if names else reason


def library_errors() -> tuple[type[BaseException], ...]:
    """Errors of the codec and image libraries we call (PyAV's FFmpeg errors, Pillow's), besides ``OSError``.

    Only libraries already imported are looked at: asking must not import PyAV or Pillow.
    """
    import sys

    found: list[type[BaseException]] = [OSError]
    av_error = sys.modules.get("av.error")
    if av_error is not None:
        found.append(av_error.FFmpegError)
    pil_image = sys.modules.get("PIL.Image")
    if pil_image is not None:
        found.append(pil_image.DecompressionBombError)
    return tuple(found)


class stage:  # noqa: N801 - used as a context manager, named like one (`with stage("packing shard x"):`)
    """Turn an ``OSError`` or a codec/image library error raised inside into one :class:`SystemFailure` sentence.

    ``with stage(f"writing shard {path}"):`` reports a full disk as "writing shard /d/x.tar failed: No space left
    on device"; errors meant for the user (:class:`MovieLLMError`) pass through unchanged. The innermost stage
    names the failure.
    """

    def __init__(self, what: str) -> None:
        self.what = what

    def __enter__(self) -> stage:
        return self

    def __exit__(self, kind, err, traceback) -> bool:
        if err is None or isinstance(err, MovieLLMError) or not isinstance(err, library_errors()):
            return False
        detail = describe_os_error(err) if isinstance(err, OSError) else _first_line(err)
        raise SystemFailure(f"{self.what} failed: {detail}; fix the cause and run the same command again.") from err


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0][:300] if lines else type(err).__name__
