"""`moviellm generate --writer openai` end to end against the loopback server: dataset, resume, secrets."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from moviellm_data.cli import main
from moviellm_data.shards import read_movies

from .fake_openai import FakeOpenAI

REPO = Path(__file__).resolve().parents[2]
SECRET = "sk-proj-LOOPBACK0secret0key0Xy7Qz9Wv3Ut5"


def generate_args(server: FakeOpenAI, out: Path, *extra: str, movies: int = 3) -> list[str]:
    return ["generate", "--writer", "openai", "--llm-model", "test-model", "--llm-base-url", server.url,
            "--movies", str(movies), "--out", str(out), "--no-progress", "--llm-backoff", "0.01",
            "--llm-retries", "3", *extra]


def fragments(secret: str, width: int = 8) -> list[str]:
    return [secret[i:i + width] for i in range(len(secret) - width + 1)]


def assert_no_secret(texts: dict[str, str | bytes], secret: str = SECRET) -> None:
    """No text holds the secret or any 8-character piece of it."""
    for where, text in texts.items():
        data = text.encode() if isinstance(text, str) else text
        for piece in fragments(secret):
            assert piece.encode() not in data, f"a piece of the API key is in {where}"


def all_files(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_generate_writes_a_readable_dataset_reports_failures_and_leaks_no_key(tmp_path, monkeypatch, capsys, caplog):
    out = tmp_path / "movies"
    with FakeOpenAI(api_key=SECRET) as server:
        server.add_fault("429", level="outline", retry_after="0")
        server.add_fault("500", level="scenes")
        server.add_fault("malformed", level="shots")
        server.add_fault("length", level="movie_qa")
        server.add_fault("schema", level="shots", theme="a cursed theme", times=100)
        monkeypatch.setenv("OPENAI_API_KEY", SECRET)
        caplog.set_level(logging.DEBUG)  # every log line of ours, openai's and httpx2's
        code = main(generate_args(server, out, "--themes", "a love story", "a bank heist", "a cursed theme",
                                  "--price-per-mtok", "1,2"))
    captured = capsys.readouterr()
    assert code == 1  # one movie failed

    movies = {script.theme: (script, frames) for script, frames in read_movies(out)}
    assert set(movies) == {"a love story", "a bank heist"}  # the failed movie is not in the dataset at all
    for script, frames in movies.values():
        assert frames.shape[0] == script.num_frames == 12
        assert script.provenance.writer.name == "openai" and script.provenance.renderer.name == "storyboard"
    failures = [json.loads(line) for line in (out / ".moviellm" / "failures-r0000.jsonl").read_text().splitlines()]
    assert [f["theme"] for f in failures] == ["a cursed theme"]
    assert "failed validation" in failures[0]["reason"] and "after 2 repair rounds" in failures[0]["reason"]
    assert "a cursed theme" in captured.err and "wrote 2 movies" in captured.out
    recipe = yaml.safe_load((out / "pipeline.yaml").read_text())["recipe"]["writer"]
    assert recipe["name"] == "openai" and recipe["model"] == "test-model"

    assert_no_secret({"stdout": captured.out, "stderr": captured.err, "log": caplog.text, **all_files(out)})
    assert any("retry 1/3" in r.getMessage() for r in caplog.records)  # the logs were really captured


def test_a_killed_run_resumes_from_the_cache_and_an_identical_run_is_free(tmp_path):
    out, again = tmp_path / "movies", tmp_path / "again"
    movies, per_movie = 5, 1 + 2 + 4 + 1
    with FakeOpenAI(api_key=SECRET, latency=0.05) as server:
        args = generate_args(server, out, "--concurrency", "2", movies=movies)
        env = {**os.environ, "OPENAI_API_KEY": SECRET, "PYTHONPATH": str(REPO)}
        proc = subprocess.Popen([sys.executable, "-m", "moviellm_data.cli", *args], env=env, cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert server.wait_for_requests(14, timeout=60), "the run never got going"
        finally:
            proc.kill()
            proc.communicate()
        cache = out / ".moviellm" / "llm-cache.sqlite"
        with sqlite3.connect(cache) as db:
            cached = db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
        assert 0 < cached < movies * per_movie

        server.reset_counts()
        os.environ["OPENAI_API_KEY"] = SECRET
        try:
            assert main(args) == 0
            # Only what the killed run had not finished is asked again.
            assert server.totals.requests == movies * per_movie - cached
            first = {s.id: s for s, _ in read_movies(out, decode=False)}
            assert len(first) == movies

            server.reset_counts()
            assert main(generate_args(server, again, "--llm-cache", str(cache), movies=movies)) == 0
            assert server.totals.requests == 0
        finally:
            del os.environ["OPENAI_API_KEY"]
    second = {s.id: s for s, _ in read_movies(again, decode=False)}

    def writer_part(script):
        data = script.model_dump()
        data["provenance"].pop("created_at")
        return data

    assert {k: writer_part(v) for k, v in first.items()} == {k: writer_part(v) for k, v in second.items()}


def test_a_rejected_key_is_one_sentence_without_the_key(tmp_path, monkeypatch, capsys):
    out = tmp_path / "movies"
    with FakeOpenAI(echo_key=True) as server:  # echoes whatever key it gets, the worst case
        monkeypatch.setenv("OPENAI_API_KEY", SECRET)
        code = main(generate_args(server, out))
    captured = capsys.readouterr()
    assert code == 2
    assert "rejected the API key (HTTP 401" in captured.err and "$OPENAI_API_KEY" in captured.err
    assert len(captured.err.strip().splitlines()) == 1
    assert_no_secret({"stdout": captured.out, "stderr": captured.err, **all_files(out)})


@pytest.mark.parametrize("extra,env,message", [
    (["--llm-model", ""], {}, "--writer openai needs --llm-model"),
    (["--llm-base-url", f"http://me:{SECRET}@127.0.0.1:9/v1"], {}, "must not carry a user, password"),
    (["--llm-model", "my-own-llama", "--max-cost", "5"], {}, "needs the price of my-own-llama"),
    (["--llm-api-key-env", SECRET], {}, "takes the NAME of an environment variable"),
    (["--llm-base-url", "https://api.openai.com/v1", "--llm-api-key-env", "NO_SUCH_KEY_VARIABLE"], {},
     "no API key for https://api.openai.com/v1: export it as $NO_SUCH_KEY_VARIABLE"),
    (["--price-per-mtok", "cheap"], {}, "--price-per-mtok: expected IN,OUT"),
    (["--concurrency", "0"], {}, "--concurrency must be at least 1"),
])
def test_bad_options_get_one_sentence_and_write_nothing(tmp_path, monkeypatch, capsys, extra, env, message):
    out = tmp_path / "movies"
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with FakeOpenAI(api_key=SECRET) as server:
        code = main([*generate_args(server, out), *extra])
        assert server.totals.requests == 0
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (out / "pipeline.yaml").exists()
    assert_no_secret({"stderr": err})
