"""Issue 12, the cards' "How to load": every Python snippet of a generated card runs as written, on the core
install (no torch, no torchcodec) and, for the snippet that needs it, with torchcodec (the `video` extra)."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from moviellm_data.builders.movie_qa_bench import pack_benchmark, write_card

from tests.core_install import REPO, core_python


def python_snippets(card: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", card.read_text(encoding="utf-8"), flags=re.DOTALL)


def run_snippet(code: str, cwd: Path, core_install: bool) -> subprocess.CompletedProcess:
    """Run a snippet in a fresh interpreter, on the core install (no torch, no torchcodec) or on this environment."""
    env = {"HF_DATASETS_CACHE": str(cwd / "hf-cache")}
    if core_install:
        return core_python(code, cwd, env=env)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(REPO), **env}, timeout=300)


def _needs_torchcodec(snippet: str) -> bool:
    return "VideoDecoder" in snippet


def test_the_movie_card_snippets_run_on_the_core_install(movies, tmp_path):
    snippets = python_snippets(movies / "README.md")
    assert len(snippets) == 2
    core = [s for s in snippets if not _needs_torchcodec(s)]
    assert core
    for snippet in core:
        done = run_snippet(snippet + "\nprint(len(frames), frames.shape, script['id'])\n", tmp_path, core_install=True)
        assert done.returncode == 0, done.stderr[-3000:]
        assert re.search(r"^12 \(12, 96, 128, 3\) m\d{6}_", done.stdout.strip().splitlines()[-1])
    # The order matters: reading a row before the cast needs torchcodec (what the card said before issue 12).
    wrong_order = ('from datasets import load_dataset\nmovies = load_dataset(%r, split="train")\nmovies[0]["json"]\n'
                   % str(movies))
    assert run_snippet(wrong_order, tmp_path, core_install=True).returncode != 0


def test_the_movie_card_torchcodec_snippet_decodes_with_datasets(movies, tmp_path):
    if importlib.util.find_spec("torchcodec") is None:
        pytest.skip("torchcodec is not installed (the `video` extra: torchcodec <= 0.13 beside a CPU torch, with "
                    "FFmpeg 5.1's libraries); CI installs it")
    snippet, = [s for s in python_snippets(movies / "README.md") if _needs_torchcodec(s)]
    done = run_snippet(snippet + "\nprint(tuple(frames.shape), str(frames.dtype))\n", tmp_path, core_install=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "(12, 3, 96, 128) torch.uint8"


def test_the_qa_bench_card_snippet_runs_on_the_core_install(movies, tmp_path):
    bench = tmp_path / "bench"
    pack_benchmark("from-movies", movies, bench)
    write_card(bench)
    snippet, = python_snippets(bench / "README.md")
    done = run_snippet(snippet + "\nprint(sorted(entry['QA']))\n", tmp_path, core_install=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "['overview_qa', 'plot_qa', 'temporal_qa']"
