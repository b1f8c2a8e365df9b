"""`predictions.jsonl`, the file `moviellm answer` writes and `moviellm eval` reads (/work/notes/predictions-format.md).

One JSON object per line, appended and fsynced line by line, so a killed run leaves only complete lines (a line cut
by the kill is dropped when the file is opened again, and its question is answered again). A rerun answers only
what the file does not hold yet, and refuses to mix in answers of another model, benchmark or settings.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from moviellm_data.errors import ConfigError

__all__ = ["PredictionsFile", "prediction_key"]

#: Fields of a line that must be the same for every line of one file.
_RUN_FIELDS = ("benchmark", "model", "generation")


def prediction_key(split: str, question_id: str) -> tuple[str, str]:
    """What identifies a line: ids are unique within a split (Video-ChatGPT's splits reuse `<video>_<k>`)."""
    return (str(split), str(question_id))


class PredictionsFile:
    """An append-only predictions file.

    Args:
        path: the `.jsonl` file (created with its parent folder when missing).

    Raises `ConfigError` when the path is a folder, cannot be written, or holds a line that is not a prediction.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise ConfigError(f"--out {self.path} is a folder; give a file path such as {self.path / 'predictions.jsonl'}.")
        self._check_writable()
        self._drop_cut_line()
        self.lines = self._read() if self.path.exists() else []

    def _check_writable(self) -> None:
        """Fail now, not after the model has loaded: the file (or the folder it goes in) must be writable."""
        try:
            if self.path.exists():
                with open(self.path, "ab"):
                    pass
                return
            folder = self.path.parent
            while not folder.exists():
                folder = folder.parent
            if not folder.is_dir():
                raise NotADirectoryError(f"{folder} is a file")
            if self.path.parent.exists():
                probe = self.path.parent / f".{self.path.name}.{os.getpid()}.probe"
                probe.write_bytes(b"")
                probe.unlink()
            elif not os.access(folder, os.W_OK):
                raise PermissionError("permission denied")
        except OSError as error:
            reason = error.strerror or str(error)
            raise ConfigError(f"cannot write --out {self.path} ({reason}); choose a writable file path.") from None

    def _drop_cut_line(self) -> None:
        """A kill while a line was written leaves it without its newline: cut it off, it is answered again."""
        if not self.path.exists():
            return
        with open(self.path, "rb+") as handle:
            data = handle.read()
            if data and not data.endswith(b"\n"):
                handle.truncate(data.rfind(b"\n") + 1)

    def _read(self) -> list[dict[str, Any]]:
        lines = []
        with open(self.path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    record = None
                if not isinstance(record, dict) or "id" not in record or "split" not in record:
                    raise ConfigError(f"line {number} of {self.path} is not a prediction; give --out a new file or "
                                      "the predictions file of an earlier run of the same command.")
                lines.append(record)
        return lines

    def done(self) -> set[tuple[str, str]]:
        """Keys (split, id) of the lines already written."""
        return {prediction_key(line["split"], line["id"]) for line in self.lines}

    def check_same_run(self, benchmark: str, model: dict, generation: dict) -> None:
        """Refuse to continue a file written for another benchmark, model or generation settings."""
        current = {"benchmark": benchmark, "model": model, "generation": generation}
        for line in self.lines[:1]:
            changed = [name for name in _RUN_FIELDS if line.get(name) != current[name]]
            if changed:
                raise ConfigError(f"{self.path} holds predictions made with another {', '.join(changed)}; continue it "
                                  "with the same options, or give --out a new file.")

    def append(self, record: dict[str, Any]) -> None:
        """Write one line and make it durable before returning."""
        text = json.dumps(record, ensure_ascii=False) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        self.lines.append(record)
