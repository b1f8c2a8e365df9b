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
