"""Who writes movie scripts: the offline :class:`ProceduralWriter`, and LLM writers."""

from .base import MovieRequest, WriteFailure, Writer, derive_seed, make_movie_id
from .procedural import ProceduralWriter

__all__ = ["MovieRequest", "ProceduralWriter", "WriteFailure", "Writer", "derive_seed", "make_movie_id"]
