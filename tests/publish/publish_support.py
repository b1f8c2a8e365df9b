"""Helpers shared by the publishing tests (a module with a unique name: every test folder has a conftest)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from moviellm_data.pipeline import GenerateOptions, generate
from moviellm_data.renderers import StoryboardRenderer
from moviellm_data.writers import ProceduralWriter

REPO = Path(__file__).resolve().parents[2]
# `python -m moviellm_data.cli` would run cli.py as __main__, a second copy of the verb registry.
_MAIN = "import sys; from moviellm_data.cli import main; sys.exit(main())"


def make_movies(out: Path, movies: int = 3, seed: int = 11, shard_bytes: int = 30_000) -> Path:
    """Tiny movies (12 frames of 128x96) in about a quarter of a second each; small shards, so several."""
    result = generate(GenerateOptions(out=out, movies=movies, seed=seed, shard_bytes=shard_bytes),
                      ProceduralWriter("tiny"), StoryboardRenderer(128, 96), progress=False)
    assert result.complete
    return out


def cli(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``moviellm ARGS`` in a fresh interpreter."""
    return subprocess.run([sys.executable, "-c", _MAIN, *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=REPO, timeout=timeout)


def python(code: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run a Python snippet in a fresh interpreter (so HF_ENDPOINT is read at import, as for a user)."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=REPO, timeout=timeout)


def write_video(path: Path, frames: int = 4, width: int = 64, height: int = 48, fps: int = 2) -> Path:
    """A small video file in the container its suffix names (.mp4/.mkv: H.264, .avi: MPEG-4 part 2)."""
    import av
    import numpy as np

    codec = "mpeg4" if path.suffix == ".avi" else "libx264"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            image = np.zeros((height, width, 3), np.uint8)
            image[:, : (i + 1) * width // frames] = (40 * i % 255, 200, 90)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
