"""The writer through the OpenAI Batch API of the loopback server: half price, level by level, resumable."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time

import pytest

from moviellm_data.cli import main
from moviellm_data.shards import read_movies
from moviellm_data.writers.llm_writer import LLMWriter

from .conftest import PRICE, settings_for
from .fake_openai import FakeOpenAI
from .test_cli import REPO, SECRET, generate_args
from .test_writer import requests_per_movie, write


def test_batch_api_writes_every_movie_level_by_level_at_half_price(server):
    server.add_fault("schema", level="shots")
    server.add_fault("500", level="scenes")
    writer = LLMWriter(settings_for(server, batch=True, batch_flush=0.05, batch_poll=0.05), size="1x2x2")
    scripts, failures = write(writer, 3)
    assert len(scripts) == 3 and not failures

    assert server.records and all(r.via_batch for r in server.records)  # nothing went to /chat/completions
    batches = [entry["levels"] for entry in server.batches.values()]
    assert batches[0] == ["outline"] * 3 and batches[1] == ["scenes"] * 3  # one batch per level of all movies
    assert len(batches) <= 5  # then shots and questions, and one round for the repair and the retry
    assert writer.attempts == server.totals.requests == 3 * requests_per_movie(1, 2) + 2
    full = PRICE.cost(server.totals.prompt_tokens, server.totals.completion_tokens)
    assert writer.usage.cost == pytest.approx(full / 2)


def test_a_killed_batch_run_polls_its_pending_batch_instead_of_paying_again(tmp_path):
    out = tmp_path / "movies"
    with FakeOpenAI(api_key=SECRET, batch_polls=10**9) as server:  # batches stay in progress until told
        args = generate_args(server, out, "--batch-api", "--batch-poll", "0.05", "--batch-flush", "0.05", movies=3)
        env = {**os.environ, "OPENAI_API_KEY": SECRET, "PYTHONPATH": str(REPO)}
        proc = subprocess.Popen([sys.executable, "-m", "moviellm_data.cli", *args], env=env, cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 60
            while not any(b["polls"] >= 2 for b in server.batches.values()) and time.monotonic() < deadline:
                time.sleep(0.02)
        finally:
            proc.kill()
            proc.communicate()
        assert list(server.batches) == ["batch_1"], "the killed run should have submitted the outline batch"
        with sqlite3.connect(out / ".moviellm" / "llm-cache.sqlite") as db:
            assert db.execute("SELECT COUNT(*) FROM batch_pending WHERE batch_id = 'batch_1'").fetchone()[0] == 3

        server.batch_polls = 1
        os.environ["OPENAI_API_KEY"] = SECRET
        try:
            assert main(args) == 0
        finally:
            del os.environ["OPENAI_API_KEY"]
        levels = [entry["levels"] for entry in server.batches.values()]
    # The outlines were paid for once, in the killed run's batch, which the rerun collected.
    assert levels[0] == ["outline"] * 3 and all("outline" not in batch for batch in levels[1:])
    assert len(list(read_movies(out, decode=False))) == 3
