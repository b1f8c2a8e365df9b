"""Fixtures for the loopback Hub.

Other test folders start their own server with ``from tests.hub.hub_server import HubServer`` (or
``import hub_server`` once this folder is on sys.path, as it is after this conftest loads).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tests.hub.hub_server import FAKE_TOKEN, HubServer  # noqa: E402


@pytest.fixture
def hub():
    """A fresh loopback Hub for one test."""
    with HubServer() as server:
        yield server


@pytest.fixture
def token() -> str:
    return FAKE_TOKEN
