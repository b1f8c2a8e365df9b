"""Judge answers that cannot be used: retried within bounds, then counted and reported, never dropped or looped on."""

from __future__ import annotations

import json
import logging

import pytest

from moviellm_data.cli import main

from .judge_support import all_files, assert_no_secret, eval_args, judge_server, prediction, write_predictions

VERDICTS = {"p0 always malformed": ("yes", 5), "p1 malformed once": ("yes", 4), "p2 cut once": ("no", 2),
            "p3 refused once": ("yes", 3), "p4 always refused": ("no", 0), "p5 always cut": ("yes", 5),
            "p6 python dict": ("yes", 5), "p7 fine": ("no", 1)}


def decide(name, fields):
    pred = fields["Predicted answer"]
    verdict, score = VERDICTS[pred]
    if pred == "p6 python dict":
        # What the original judges asked for and parsed with ast.literal_eval: not JSON, so never accepted.
        return f"{{'verdict': '{verdict}', 'score': {score}}}"
    return {"verdict": verdict, "score": score}


def add_faults(server):
    server.add_fault("malformed", theme="p0 always malformed", times=100)
    server.add_fault("malformed", theme="p1 malformed once")
    server.add_fault("length", theme="p2 cut once")
    server.add_fault("refusal", theme="p3 refused once")
    server.add_fault("refusal", theme="p4 always refused", times=100)
    server.add_fault("length", theme="p5 always cut", times=100)


def test_malformed_truncated_and_refused_answers_are_retried_then_reported(tmp_path, capsys, caplog):
    rows = [prediction(f"v{i}_0", "msvd_qa", f"question {i}?", f"reference {i}", pred)
            for i, pred in enumerate(VERDICTS)]
    preds = write_predictions(tmp_path / "preds.jsonl", rows)
    out = tmp_path / "eval"
    caplog.set_level(logging.DEBUG)  # every log line of ours, openai's and httpx's
    with judge_server(decide) as server:
        add_faults(server)
        code = main(eval_args(server, preds, "msvd-qa", out, "--judge-repairs", "2", "--judge-attempts", "2"))
        # Requests, by hand: a repair round or a longer re-ask fixes a one-off fault (2 requests); a refusal is
        # asked again from scratch (2); a fault that never stops costs (1 + 2 repair rounds) x 2 attempts = 6,
        # except a refusal, which has no repair round: 2.
        assert server.totals.requests == 6 + 2 + 2 + 2 + 2 + 6 + 6 + 1
        first_requests = server.totals.requests

        server.reset_counts()
        assert main(eval_args(server, preds, "msvd-qa", out)) == 1
        # A rerun asks again only what is still unjudged: the judged ones come from the cache.
        assert server.totals.requests == 6 + 2 + 6 + 6
    captured = capsys.readouterr()
    assert code == 1 and "4 calls unjudged" in captured.err and "run the same command again" in captured.err

    run = json.loads((out / "results.json").read_text())["runs"]["msvd-qa-llamavid-tiny"]
    m = run["metrics"]["msvd_qa"]
    # Judged: p1 yes 4, p2 no 2, p3 yes 3, p7 no 1 -> accuracy 2/4, score 10/4.
    assert (m["judged"], m["unjudged"], m["total"]) == (4, 4, 8)
    assert m["accuracy"] == pytest.approx(2 / 4) and m["score"] == pytest.approx((4 + 2 + 3 + 1) / 4)
    assert run["counts"]["unjudged_by_kind"] == {"invalid": 2, "refused": 1, "truncated": 1}
    reasons = {item["id"]: (item["kind"], item["reason"]) for item in run["unjudged"]}
    assert set(reasons) == {"v0_0", "v4_0", "v5_0", "v6_0"}
    assert reasons["v4_0"][0] == "refused" and "refused to answer" in reasons["v4_0"][1]
    assert reasons["v5_0"][0] == "truncated" and "cut off" in reasons["v5_0"][1]
    assert reasons["v6_0"][0] == "invalid" and "not valid JSON" in reasons["v6_0"][1]
    md = (out / "results.md").read_text()
    assert "unjudged 4 (" in md and "unjudged msvd_qa v6_0" in md
    judgements = [json.loads(line) for line in (out / "msvd-qa-llamavid-tiny.judgements.jsonl").read_text().splitlines()]
    assert len(judgements) == 8 and sum("unjudged" in j for j in judgements) == 4
    assert first_requests > 0
    assert_no_secret({"stdout": captured.out, "stderr": captured.err, "log": caplog.text, **all_files(out)})
    assert any("retry" in r.getMessage() or "repair round" in r.getMessage() for r in caplog.records)


def test_a_spent_budget_reports_the_rest_unjudged_and_a_rerun_continues(tmp_path, capsys):
    rows = [prediction(f"v{i}_0", "msvd_qa", f"question {i}?", f"reference {i}", "p7 fine") for i in range(6)]
    preds = write_predictions(tmp_path / "preds.jsonl", rows)
    out = tmp_path / "eval"
    with judge_server(decide) as server:
        # Each call reserves about 1,000 completion tokens at $1,000,000/M = $1 until its answer settles it.
        args = eval_args(server, preds, "msvd-qa", out, "--concurrency", "1", "--price-per-mtok", "1000,1000")
        assert main([*args, "--max-cost", "1.5"]) == 1
        sent = server.totals.requests
        assert 0 < sent < 6
        run = json.loads((out / "results.json").read_text())["runs"]["msvd-qa-llamavid-tiny"]
        assert run["counts"]["unjudged_by_kind"] == {"budget": 6 - sent}
        server.reset_counts()
        assert main(args) == 0
        assert server.totals.requests == 6 - sent
    assert "budget" in capsys.readouterr().err
