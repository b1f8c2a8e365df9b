"""Fixtures for the loopback Hub. ``hub_server.py`` is importable from any test as ``hub_server``
(this folder is put on sys.path), so other test folders can start their own server."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hub_server import FAKE_TOKEN, HubServer  # noqa: E402


@pytest.fixture
def hub():
    """A fresh loopback Hub for one test."""
    with HubServer() as server:
        yield server


@pytest.fixture
def token() -> str:
    return FAKE_TOKEN
