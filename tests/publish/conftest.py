"""Fixtures for publishing tests: small generated datasets, a loopback Hub, and the command line.

Everything that talks to the Hub runs in a subprocess whose environment holds HF_ENDPOINT (huggingface_hub
and datasets read it when they are imported), so no test depends on import order or leaks an endpoint
into other tests.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.hub.hub_server import HubServer
from tests.publish.publish_support import make_movies


@pytest.fixture(scope="session")
def movies(tmp_path_factory) -> Path:
    """Three tiny movies in three shards. Tests that change a folder copy it first."""
    return make_movies(tmp_path_factory.mktemp("publish") / "movies")


@pytest.fixture
def hub():
    """A fresh loopback Hub per test (starting one takes a millisecond), so faults and commits don't mix."""
    with HubServer() as server:
        yield server


@pytest.fixture
def hf_env(hub, tmp_path) -> dict:
    """Environment for a subprocess that talks to the loopback Hub, with its own HF_HOME."""
    return hub.env(tmp_path / "hf-home")
