"""Models served by a Hub: the tiny SDXL and refiner uploaded to a loopback Hub, rendered by Hub id."""

from __future__ import annotations

import subprocess
import sys

from moviellm_data.shards import read_movies
from tests.hub.hub_server import FAKE_TOKEN, HubServer


def _cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    # A fresh interpreter: huggingface_hub reads HF_ENDPOINT when it is imported.
    import os

    return subprocess.run([sys.executable, "-m", "moviellm_data.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=300)


def test_render_with_models_from_a_hub(tiny_sdxl, tmp_path):
    from huggingface_hub import HfApi

    base, refiner = tiny_sdxl
    with HubServer() as hub:
        api = HfApi(endpoint=hub.url, token=FAKE_TOKEN)
        for folder, repo in ((base, "studio/tiny-sdxl"), (refiner, "studio/tiny-sdxl-refiner")):
            api.create_repo(repo)
            api.upload_folder(folder_path=str(folder), repo_id=repo)
        env = {**hub.env(tmp_path / "hf-home"), "OMP_NUM_THREADS": "1"}
        out = tmp_path / "movies"
        common = ["--renderer", "diffusers", "--width", "64", "--height", "64", "--steps", "2", "--dtype", "float32",
                  "--vae-dtype", "float32", "--style", "none", "--no-progress"]
        done = _cli("generate", "--movies", "1", "--size", "1x1x3", "--out", str(out), "--image-model", "studio/tiny-sdxl",
                    "--refiner", "studio/tiny-sdxl-refiner", *common, env=env)
        assert done.returncode == 0, done.stderr[-2000:]
        [(script, frames)] = list(read_movies(out))
        assert frames.shape == (3, 64, 64, 3)
        assert script.provenance.renderer.model == "studio/tiny-sdxl"
        assert script.provenance.renderer.refiner == "studio/tiny-sdxl-refiner"
        assert any("/studio/tiny-sdxl-refiner/resolve/" in path for _, path, _ in hub.requests)

        missing = _cli("generate", "--movies", "1", "--out", str(tmp_path / "never"), "--image-model", "studio/no-such-model",
                       "--refiner", "none", *common, env=env)
        assert missing.returncode == 2
        # (Lines before it are import-time library warnings of this environment, e.g. no torchvision.)
        last = missing.stderr.strip().splitlines()[-1]
        assert last.startswith("moviellm generate: error: cannot load the image model 'studio/no-such-model'")
        assert "Traceback" not in missing.stderr and FAKE_TOKEN not in missing.stderr
        assert not (tmp_path / "never").exists()
