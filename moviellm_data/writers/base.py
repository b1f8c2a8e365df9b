"""What every writer provides: a script for a movie request."""

from __future__ import annotations

import hashlib
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ..script import MovieScript


@dataclass(frozen=True)
class MovieRequest:
    """One movie to write: its id, its position in the run, its theme and its seed."""

    id: str
    index: int
    theme: str
    seed: int


def derive_seed(run_seed: int, index: int) -> int:
    """A per-movie seed that depends only on the run seed and the movie's index (stable across ranks)."""
    digest = hashlib.sha256(f"moviellm:{run_seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def make_movie_id(index: int, seed: int, theme: str) -> str:
    """A sortable, dot-free id: ``m<index>_<hash of seed and theme>``."""
    digest = hashlib.sha256(f"{seed}\x00{theme}".encode()).hexdigest()[:8]
    return f"m{index:06d}_{digest}"


def slugify(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


class Writer(ABC):
    """Turns a :class:`MovieRequest` into a validated :class:`MovieScript`."""

    name: str = "writer"

    @abstractmethod
    def write(self, request: MovieRequest) -> MovieScript:
        """Write one complete, validated movie script."""

    def write_many(self, requests: Iterable[MovieRequest]) -> Iterator[MovieScript | WriteFailure]:
        """Write several movies, yielding each script (or failure) as it completes, in any order.

        The default writes one after another; writers that wait on a network override it to keep many
        requests in flight.
        """
        for request in requests:
            yield self.write(request)

    def describe(self) -> dict:
        """The writer's settings, for the dataset recipe (``pipeline.yaml``). Never holds secrets."""
        return {"name": self.name}


@dataclass(frozen=True)
class WriteFailure:
    """A movie the writer gave up on, with the reason (never containing a secret)."""

    request: MovieRequest
    reason: str
