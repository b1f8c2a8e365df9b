"""Argument types shared by every verb's options (argparse ``type=`` callables)."""

from __future__ import annotations

import argparse

_UNITS = {"kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "b": 1}


def positive_int(text: str) -> int:
    """A whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def byte_size(text: str) -> int:
    """'1GB', '500MB', '64KB' or a plain number of bytes (decimal units, as the Hub counts)."""
    lowered = text.strip().lower()
    for unit, factor in _UNITS.items():
        if lowered.endswith(unit):
            number = lowered[: -len(unit)].strip()
            break
    else:
        number, factor = lowered, 1
    try:
        value = int(float(number) * factor)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a size such as 1GB or 500MB, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A number above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def probability(text: str) -> float:
    """A number in (0, 1]."""
    value = positive_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be at most 1, got {text}")
    return value


def looks_like_path(ref: str) -> bool:
    """How a PATH_OR_ID option tells a path from a Hub id: ids are ``name`` or ``namespace/name``, anything else
    (a leading ``.``, ``/`` or ``~``, more than one ``/``, a backslash) is meant as a local path."""
    return ref.startswith((".", "/", "~")) or ref.count("/") > 1 or "\\" in ref
