"""Shared fixtures: small generated datasets and a way to run the command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from moviellm_data.pipeline import GenerateOptions, generate
from moviellm_data.renderers import StoryboardRenderer
from moviellm_data.writers import ProceduralWriter

REPO = Path(__file__).resolve().parent.parent


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``moviellm ARGS`` in a fresh interpreter, as a user would."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "moviellm_data.cli", *args],
        capture_output=True, text=True, env=full_env, cwd=cwd or REPO, timeout=timeout,
    )


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """Four tiny movies (12 frames each) at 384x256, made through the Python API."""
    out = tmp_path_factory.mktemp("tiny") / "movies"
    result = generate(GenerateOptions(out=out, movies=4, seed=7), ProceduralWriter("tiny"), StoryboardRenderer(), progress=False)
    assert result.complete and result.written == 4
    return out


@pytest.fixture
def one_torch_thread():
    """Tiny tensors: splitting each op over threads costs more than it saves (much more on a busy machine)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
