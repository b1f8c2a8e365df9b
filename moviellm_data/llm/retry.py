"""When to retry a chat request and how long to wait first."""

from __future__ import annotations

import email.utils
import math
import random
import time
from dataclasses import dataclass

# Statuses a later identical request can succeed on (the same set the OpenAI SDKs retry).
RETRYABLE_STATUS = frozenset({408, 409, 429})


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff with full jitter that defers to the server's Retry-After.

    Args:
        max_retries: retries after the first attempt of one request (so at most ``max_retries + 1`` sends).
        backoff_base: seconds before the first retry when the server gives no Retry-After; doubles each time.
        backoff_max: the longest computed backoff.
        max_retry_after: the longest Retry-After honoured; a server asking for more gets this long.
    """

    max_retries: int = 6
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    max_retry_after: float = 300.0

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError("max_retries must be 0 or more")
        if self.backoff_base < 0 or self.backoff_max < 0 or self.max_retry_after < 0:
            raise ValueError("backoff times must not be negative")

    def delay(self, retry: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (0-based)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after)
        ceiling = min(self.backoff_max, self.backoff_base * (2**retry))
        # Jitter spreads the retries of many concurrent requests apart (no thundering herd).
        return ceiling * (0.5 + 0.5 * (rng or random).random())


def is_retryable_status(status: int) -> bool:
    return status in RETRYABLE_STATUS or status >= 500


def parse_retry_after(headers) -> float | None:
    """Seconds from ``retry-after-ms``, or ``retry-after`` as seconds or an HTTP date; None if absent."""
    if headers is None:
        return None
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            seconds = float(value) / 1000.0
            if math.isfinite(seconds):
                return max(seconds, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
        return max(seconds, 0.0) if math.isfinite(seconds) else None
    except ValueError:
        pass
    parsed = email.utils.parsedate_tz(value)
    if parsed is None:
        return None
    return max(email.utils.mktime_tz(parsed) - time.time(), 0.0)
