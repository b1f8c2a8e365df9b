"""A SQLite cache of validated answers: reruns are free and a killed run resumes where it stopped.

An answer is stored the moment it has been validated, under a key that hashes everything that
determines it (endpoint, model, messages, schema, sampling parameters; see
:func:`moviellm_data.llm.client.cache_key`). Only validated answers are stored, so a cache hit never
needs a repair. The database is in WAL mode with a busy timeout, so several processes (ranks) can
share one file, and every write is committed at once, so a kill loses at most the answers in flight.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

CACHE_FORMAT = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    key TEXT PRIMARY KEY,
    label TEXT NOT NULL,
    answer TEXT NOT NULL,
    model TEXT,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    requests INTEGER NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS movie_usage (id TEXT PRIMARY KEY, usage TEXT NOT NULL, updated REAL NOT NULL);
"""


@dataclass(frozen=True)
class CachedAnswer:
    """A validated answer as stored, with what it cost when it was first obtained."""

    answer: object
    model: str | None
    prompt_tokens: int
    completion_tokens: int
    requests: int


class ResponseCache:
    """Validated answers by key, in one SQLite file.

    Args:
        path: the database file (created with its folder); ``None`` keeps nothing (a cache that always misses).
    """

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path is not None else None
        self._db: sqlite3.Connection | None = None
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            # In WAL mode NORMAL still survives a killed process (what resuming needs); only a power cut
            # can lose the last answers. FULL would fsync every answer and dominate the run's CPU time.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=30000")
            self._db.executescript(_SCHEMA)
            stored = self._db.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
            if stored is None:
                self._db.execute("INSERT OR IGNORE INTO meta VALUES ('format', ?)", (str(CACHE_FORMAT),))
            elif stored[0] != str(CACHE_FORMAT):
                raise ConfigError(
                    f"LLM cache {self.path} was written by another moviellm version (format {stored[0]}); "
                    "give a new --llm-cache path."
                )
        except sqlite3.DatabaseError as err:
            raise ConfigError(f"cannot use {self.path} as the LLM cache ({err}); give another --llm-cache path.") from None

    def get(self, key: str) -> CachedAnswer | None:
        if self._db is None:
            return None
        row = self._db.execute(
            "SELECT answer, model, prompt_tokens, completion_tokens, requests FROM answers WHERE key = ?", (key,)
        ).fetchone()
        if row is None:
            return None
        try:
            answer = json.loads(row[0])
        except json.JSONDecodeError:
            return None
        return CachedAnswer(answer, row[1], row[2], row[3], row[4])

    def put(self, key: str, label: str, answer: object, model: str | None, prompt_tokens: int,
            completion_tokens: int, requests: int) -> None:
        if self._db is None:
            return
        self._db.execute(
            "INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (key, label, json.dumps(answer, ensure_ascii=False, sort_keys=True), model, prompt_tokens,
             completion_tokens, requests, time.time()),
        )

    def get_meta(self, key: str) -> str | None:
        if self._db is None:
            return None
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        if self._db is not None:
            self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def record_movie_usage(self, movie_id: str, usage: dict) -> None:
        if self._db is not None:
            self._db.execute("INSERT OR REPLACE INTO movie_usage VALUES (?, ?, ?)",
                             (movie_id, json.dumps(usage, sort_keys=True), time.time()))

    def movie_usage(self) -> dict[str, dict]:
        """Per-movie usage recorded so far (what each movie's requests cost when they were made)."""
        if self._db is None:
            return {}
        return {row[0]: json.loads(row[1]) for row in self._db.execute("SELECT id, usage FROM movie_usage")}

    def __len__(self) -> int:
        if self._db is None:
            return 0
        return self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
