"""Writing files so that a reader (or a killed or failed run) never sees half of one."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from .errors import ConfigError, stage


def hidden_temporary(path: str | Path) -> Path:
    """The default temporary name of ``path``: hidden, beside it, unique to this process."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


@contextlib.contextmanager
def replacing(path: str | Path, tmp: str | Path | None = None, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path to fill; rename it onto ``path`` when the block ends, delete it when the block fails.

    Whatever goes wrong inside (a full disk, a codec error, an interrupt), ``path`` keeps its earlier content and no
    partial file stays behind. ``tmp`` names the temporary file (default: :func:`hidden_temporary`); ``durable``
    fsyncs the file before the rename, so that the rename never exposes an unwritten file after a power cut. The
    temporary may also be a folder (filled inside the block); it is then renamed or removed whole.
    """
    path = Path(path)
    tmp = Path(tmp) if tmp is not None else hidden_temporary(path)
    try:
        yield tmp
        if durable and tmp.is_file():
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        discard(tmp)
        raise


def discard(path: str | Path) -> None:
    """Delete a file or folder if it exists; never raise (it runs while another error is on its way)."""
    path = Path(path)
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        pass


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to a hidden temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    with stage(f"writing {path}"), replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to a hidden temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    with stage(f"writing {path}"), replacing(path) as tmp:
        tmp.write_bytes(data)
    return path


def make_writable_folder(path: str | Path, what: str = "output folder") -> Path:
    """Create ``path`` (and its parents) and check a file can be written in it; one sentence when not.

    Run before any work starts, so that an unwritable ``--out`` costs nothing and leaves nothing behind.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{what} {path} is a file; choose a folder path for --out.")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ConfigError(f"cannot write to {what} {path} ({err.strerror or err}); choose a writable folder for "
                          "--out.") from None
    return path
