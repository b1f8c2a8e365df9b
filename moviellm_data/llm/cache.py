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
CREATE TABLE IF NOT EXISTS batch_pending (key TEXT PRIMARY KEY, batch_id TEXT NOT NULL, created REAL NOT NULL);
CREATE INDEX IF NOT EXISTS batch_pending_by_batch ON batch_pending (batch_id);
CREATE TABLE IF NOT EXISTS batch_results (
    key TEXT PRIMARY KEY, batch_id TEXT NOT NULL, status INTEGER NOT NULL, body TEXT, error TEXT, created REAL NOT NULL
);
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

    Also records which requests wait in which Batch API job and what finished jobs returned
    (:mod:`moviellm_data.llm.batch`).

    Args:
        path: the database file (created with its folder); ``None`` keeps everything in memory for this
            run only (nothing is reused by a later run).
        option: the command-line option that names the file, for error messages.
    """

    def __init__(self, path: str | Path | None, option: str = "--llm-cache") -> None:
        self.path = Path(path) if path is not None else None
        self._db: sqlite3.Connection | None = None
        try:
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path if self.path is not None else ":memory:", timeout=30.0,
                                       isolation_level=None)
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
                    f"give a new {option} path."
                )
        except (sqlite3.DatabaseError, OSError) as err:
            raise ConfigError(f"cannot use {self.path} as the LLM cache ({err}); give another {option} path.") from None

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

    # ------------------------------------------------------------------------------- batch jobs

    def record_batch(self, batch_id: str, keys: list[str]) -> None:
        """Remember that the requests ``keys`` wait in batch ``batch_id``."""
        if self._db is not None:
            now = time.time()
            with self._db:
                self._db.execute("BEGIN")
                self._db.executemany("INSERT OR REPLACE INTO batch_pending VALUES (?, ?, ?)",
                                     [(key, batch_id, now) for key in keys])

    def batch_pending(self, key: str) -> str | None:
        if self._db is None:
            return None
        row = self._db.execute("SELECT batch_id FROM batch_pending WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def batch_keys(self, batch_id: str) -> list[str]:
        if self._db is None:
            return []
        return [row[0] for row in self._db.execute("SELECT key FROM batch_pending WHERE batch_id = ?", (batch_id,))]

    def store_batch_results(self, batch_id: str, results: dict[str, tuple[int, object, str | None]]) -> None:
        """Keep what a finished batch returned and mark its requests as no longer pending."""
        if self._db is None:
            return
        now = time.time()
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR REPLACE INTO batch_results VALUES (?, ?, ?, ?, ?, ?)",
                [(key, batch_id, status, json.dumps(body) if body is not None else None, error, now)
                 for key, (status, body, error) in results.items()],
            )
            self._db.execute("DELETE FROM batch_pending WHERE batch_id = ?", (batch_id,))

    def batch_result(self, key: str) -> tuple[int, object, str | None] | None:
        if self._db is None:
            return None
        row = self._db.execute("SELECT status, body, error FROM batch_results WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        return row[0], json.loads(row[1]) if row[1] is not None else None, row[2]

    def forget_batch_result(self, key: str) -> None:
        if self._db is not None:
            self._db.execute("DELETE FROM batch_results WHERE key = ?", (key,))

    def __len__(self) -> int:
        if self._db is None:
            return 0
        return self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
