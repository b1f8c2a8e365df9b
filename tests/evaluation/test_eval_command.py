"""`moviellm eval` as a user runs it: kill and resume, reruns for free, no key anywhere, bad input, no torch."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys

import pytest

from moviellm_data.cli import main

from .judge_support import (
    MAIN_WITHOUT_TORCH,
    REPO,
    SECRET,
    all_files,
    assert_no_secret,
    eval_args,
    judge_server,
    prediction,
    run_cli,
    write_predictions,
)


def qa_decide(name, fields):
    return {"verdict": "yes" if fields["Predicted answer"].endswith("good") else "no", "score": 3}


def qa_file(tmp_path, n: int, benchmark: str = "msvd_qa", name: str = "preds.jsonl"):
    rows = [prediction(f"v{i}_0", benchmark, f"question {i}?", f"reference {i}", f"answer {i} " + ("good" if i % 3 else "bad"))
            for i in range(n)]
    return write_predictions(tmp_path / name, rows)


def cached_answers(out) -> int:
    with sqlite3.connect(out / ".moviellm" / "judge-cache.sqlite") as db:
        return db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]


def test_a_killed_run_resumes_with_exactly_the_unjudged_calls_and_a_rerun_is_free(tmp_path, capsys):
    total = 24
    preds = qa_file(tmp_path, total)
    out = tmp_path / "eval"
    with judge_server(qa_decide, latency=0.1) as server:
        args = eval_args(server, preds, "msvd-qa", out, "--concurrency", "2")
        env = {**os.environ, "OPENAI_API_KEY": SECRET, "PYTHONPATH": str(REPO)}
        # Without torch: judging only reads JSON and calls the judge.
        proc = subprocess.Popen([sys.executable, "-c", MAIN_WITHOUT_TORCH, *args], env=env, cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert server.wait_for_requests(8, timeout=60), "the run never got going"
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
        assert proc.returncode == -signal.SIGKILL
        cached = cached_answers(out)
        assert 0 < cached < total
        assert not (out / "results.json").exists()  # reports come only from a finished run

        server.reset_counts()
        assert main(args) == 0
        assert server.totals.requests == total - cached  # exactly the calls the killed run had no answer for
        first = json.loads((out / "results.json").read_text())["runs"]["msvd-qa-llamavid-tiny"]

        server.reset_counts()
        assert main(args) == 0
        assert server.totals.requests == 0  # an identical rerun costs nothing
        again = json.loads((out / "results.json").read_text())["runs"]["msvd-qa-llamavid-tiny"]
    assert first["metrics"] == again["metrics"]
    assert first["metrics"]["msvd_qa"]["accuracy"] == pytest.approx(16 / 24)  # i % 3 != 0 for 16 of 0..23
    assert again["usage"]["cached"] == total and again["usage"]["requests"] == 0
    assert "judged 24 of 24 calls (24 from the cache)" in capsys.readouterr().out


def test_results_record_what_reproduces_them_and_the_key_is_in_no_output(tmp_path):
    preds = qa_file(tmp_path, 5)
    out = tmp_path / "eval"
    with judge_server(qa_decide) as server:
        server.add_fault("500")
        server.add_fault("malformed")
        result = run_cli(["-v", *eval_args(server, preds, "msvd-qa", out)], main=MAIN_WITHOUT_TORCH)
        url = server.url
    assert result.returncode == 0, result.stderr
    import hashlib

    from moviellm_data import __version__
    from moviellm_model.evaluation.judges import load_judge

    run = json.loads((out / "results.json").read_text())["runs"]["msvd-qa-llamavid-tiny"]
    assert run["predictions"]["sha256"] == hashlib.sha256(preds.read_bytes()).hexdigest()
    assert run["prompts"]["open_ended_qa"]["sha256"] == load_judge("open_ended_qa").sha256
    assert run["prompts"]["open_ended_qa"]["sha256"] == hashlib.sha256(
        (REPO / "moviellm_model/evaluation/prompts/open_ended_qa.v1.md").read_bytes()).hexdigest()
    assert run["judge"]["model"] == "judge-model" and run["judge"]["reported_models"] == {"judge-model-2026-01-01": 5}
    assert run["judge"]["temperature"] == 0 and run["judge"]["endpoint"] == url
    assert run["moviellm_version"] == __version__
    assert run["command"].startswith("moviellm -v eval --predictions ") and "--judge-model judge-model" in run["command"]
    assert run["predictions"]["model"]["name_or_path"] == "org/llamavid-tiny"
    files = all_files(out)
    assert {"results.json", "results.md", "msvd-qa-llamavid-tiny.png", "eval.log", "judge-cache.sqlite",
            "msvd-qa-llamavid-tiny.judgements.jsonl"} <= {p.rsplit("/", 1)[-1] for p in files}
    assert b"retry" in (out / "eval.log").read_bytes()  # the log was really written (-v)
    assert_no_secret({"stdout": result.stdout, "stderr": result.stderr, **files})


def test_help_works_without_torch_transformers_or_openai():
    code = ("import sys; sys.modules.update(torch=None, transformers=None, openai=None); "
            "from moviellm_data.cli import main; sys.exit(main(['eval', '--help']))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
    assert result.returncode == 0, result.stderr
    for option in ("--judge-model", "--judge-base-url", "--judge-api-key-env", "--concurrency", "--max-cost",
                   "--both-orders", "--baseline", "--model-card", "movie-compare"):
        assert option in result.stdout


def _bad_input_cases(tmp_path):
    msvd = qa_file(tmp_path, 3)
    movie = [prediction(f"m{i}_overview_0", "movie_qa_bench", "Overview?", "ref", f"ours {i}", qa_type="overview")
             for i in range(3)]
    ours = write_predictions(tmp_path / "ours.jsonl", movie)
    other = write_predictions(tmp_path / "other.jsonl", [dict(r, id=r["id"].replace("m", "x")) for r in movie])
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    return {
        "missing": (["--predictions", str(tmp_path / "nope.jsonl"), "--protocol", "msvd-qa"], "does not exist"),
        "wrong protocol": (["--predictions", str(msvd), "--protocol", "vcgbench"],
                           "holds msvd_qa predictions, but --protocol vcgbench judges video_chatgpt; use --protocol msvd-qa"),
        "other ids": (["--predictions", str(ours), "--protocol", "movie-compare", "--baseline", str(other)],
                      "lacks id 'm0_overview_0'"),
        "no baseline": (["--predictions", str(ours), "--protocol", "movie-compare"], "give the other model's predictions"),
        "unwritable out": (["--predictions", str(msvd), "--protocol", "msvd-qa", "--out", str(blocker / "eval")],
                           "cannot write to --out"),
        "out is a file": (["--predictions", str(msvd), "--protocol", "msvd-qa", "--out", str(blocker)], "is a file"),
        "not json lines": (["--predictions", str(write_predictions(tmp_path / "bad.jsonl", [])), "--protocol", "msvd-qa"],
                           "holds no predictions"),
    }


@pytest.mark.parametrize("case", ["missing", "wrong protocol", "other ids", "no baseline", "unwritable out",
                                  "out is a file", "not json lines"])
def test_bad_input_gets_one_sentence_exit_2_and_sends_nothing(tmp_path, capsys, case):
    extra, message = _bad_input_cases(tmp_path)[case]
    out = tmp_path / "eval"
    with judge_server(qa_decide) as server:
        args = ["eval", "--out", str(out), "--judge-model", "judge-model", "--judge-base-url", server.url,
                "--no-progress", *extra]
        code = main(args)
        assert server.totals.requests == 0
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_a_cut_last_line_is_ignored_like_answer_does(tmp_path):
    preds = qa_file(tmp_path, 3)
    with preds.open("a") as fh:
        fh.write('{"id": "v3_0", "benchmark": "msvd_')  # a killed `moviellm answer`
    out = tmp_path / "eval"
    with judge_server(qa_decide) as server:
        assert main(eval_args(server, preds, "msvd-qa", out)) == 0
        assert server.totals.requests == 3
    run = json.loads((out / "results.json").read_text())["runs"]["msvd-qa-llamavid-tiny"]
    assert run["predictions"]["lines"] == 3 and run["predictions"]["ignored_cut_last_line"] is True


def test_a_rejected_key_stops_at_once_in_one_sentence_without_the_key(tmp_path, capsys):
    preds = qa_file(tmp_path, 4)
    out = tmp_path / "eval"
    with judge_server(qa_decide, echo_key=True) as server:
        server.api_key = "sk-another-key-the-server-wants-0000"  # so ours is rejected, and echoed back
        code = main(eval_args(server, preds, "msvd-qa", out))
        assert server.totals.requests <= 4  # no retries of a rejected key
    err = capsys.readouterr().err
    assert code == 2 and "rejected the API key (HTTP 401" in err and "$OPENAI_API_KEY" in err
    assert len(err.strip().splitlines()) == 1
    assert_no_secret({"stderr": err, **all_files(out)})


def test_evaluate_works_inside_a_running_event_loop(tmp_path):
    import asyncio

    from moviellm_data.llm import ChatSettings
    from moviellm_model.evaluation import evaluate

    preds = qa_file(tmp_path, 3)
    with judge_server(qa_decide) as server:
        settings = ChatSettings(model="judge-model", base_url=server.url, api_key=SECRET, temperature=0.0)

        async def notebook_cell():
            return evaluate(preds, "msvd-qa", settings, tmp_path / "eval", progress=False)

        report = asyncio.run(notebook_cell())
    assert report.run["counts"]["judged"] == 3 and report.unjudged == 0
    assert report.run["metrics"]["msvd_qa"]["accuracy"] == pytest.approx(2 / 3)
