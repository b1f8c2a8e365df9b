"""Every protocol's numbers on fixed predictions equal the ones computed by hand from the judge's answers."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from moviellm_data.cli import main

from .judge_support import eval_args, judge_server, prediction, write_predictions

# What the scripted judge answers for each predicted answer (open-ended QA).
QA_VERDICTS = {"a cat": ("yes", 5), "a dog": ("yes", 4), "running": ("no", 1), "two": ("yes", 3), "blue": ("no", 0)}


def qa_rows(benchmark: str) -> list[dict]:
    return [prediction(f"vid{i}_{i}", benchmark, f"question {i}?", f"reference {i}", pred)
            for i, pred in enumerate(QA_VERDICTS)]


def results(out) -> dict:
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert len(runs) == 1
    return next(iter(runs.values()))


@pytest.mark.parametrize("protocol,benchmark", [("msvd-qa", "msvd_qa"), ("msrvtt-qa", "msrvtt_qa"),
                                                ("activitynet-qa", "activitynet_qa")])
def test_open_ended_qa_accuracy_and_score(tmp_path, protocol, benchmark):
    def decide(name, fields):
        assert name == "open_ended_qa"
        verdict, score = QA_VERDICTS[fields["Predicted answer"]]
        return {"verdict": verdict, "score": score}

    preds = write_predictions(tmp_path / "preds.jsonl", qa_rows(benchmark))
    out = tmp_path / "eval"
    with judge_server(decide) as server:
        assert main(eval_args(server, preds, protocol, out)) == 0
        assert server.totals.requests == 5
    run = results(out)
    m = run["metrics"][benchmark]
    # By hand: yes for a cat, a dog, two; no for running, blue. Scores 5, 4, 1, 3, 0.
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["score"] == pytest.approx((5 + 4 + 1 + 3 + 0) / 5)
    assert (m["yes"], m["no"], m["judged"], m["unjudged"], m["total"]) == (3, 2, 5, 0, 5)
    assert run["counts"] == {"calls": 5, "judged": 5, "unjudged": 0, "unjudged_by_kind": {}}
    assert "| 60.0% | 2.600 |" in (out / "results.md").read_text()
    with Image.open(out / run["chart"]) as chart:
        assert chart.format == "PNG" and chart.width > 300


VCG_SCORES = {  # (judge, predicted answer) -> score
    ("vcg_correctness", "gen A"): 4, ("vcg_correctness", "gen B"): 2,
    ("vcg_detail", "gen A"): 3, ("vcg_detail", "gen B"): 3,
    ("vcg_context", "gen A"): 5, ("vcg_context", "gen B"): 2,
    ("vcg_temporal", "tmp A"): 1, ("vcg_temporal", "tmp B"): 2, ("vcg_temporal", "tmp C"): 4,
    ("vcg_consistency", "con A1"): 2,
}


def test_video_chatgpt_five_dimensions_and_both_questions_for_consistency(tmp_path):
    def decide(name, fields):
        answer = fields.get("Predicted answer") or fields["Answer to question 1"]
        return {"score": VCG_SCORES[(name, answer)]}

    rows = [prediction("v1_0", "video_chatgpt", "What happens?", "A man cooks.", "gen A", split="generic"),
            prediction("v2_0", "video_chatgpt", "Who is there?", "Two kids.", "gen B", split="generic"),
            prediction("v3_0", "video_chatgpt", "What comes first?", "He sits, then stands.", "tmp A", split="temporal"),
            prediction("v4_0", "video_chatgpt", "What is the order?", "Open, pour, close.", "tmp B", split="temporal"),
            prediction("v5_0", "video_chatgpt", "And then?", "It rains.", "tmp C", split="temporal"),
            prediction("v6_0", "video_chatgpt", "What colour is the car?", "Red.", "con A1", split="consistency",
                       question_2="Which colour does the car have?", prediction_2="con A2")]
    preds = write_predictions(tmp_path / "preds.jsonl", rows)
    out = tmp_path / "eval"
    with judge_server(decide, keep_bodies=True) as server:
        assert main(eval_args(server, preds, "vcgbench", out)) == 0
        assert server.totals.requests == 3 * 2 + 3 + 1
        consistency = [r.body for r in server.records if r.level == "vcg_consistency"]
    m = results(out)["metrics"]
    assert m["correctness"]["score"] == pytest.approx((4 + 2) / 2)
    assert m["detail"]["score"] == pytest.approx((3 + 3) / 2)
    assert m["context"]["score"] == pytest.approx((5 + 2) / 2)
    assert m["temporal"]["score"] == pytest.approx((1 + 2 + 4) / 3)
    assert m["consistency"]["score"] == pytest.approx(2.0)
    assert m["average"]["score"] == pytest.approx((3.0 + 3.0 + 3.5 + 7 / 3 + 2.0) / 5)
    assert [m[d]["judged"] for d in ("correctness", "detail", "context", "temporal", "consistency")] == [2, 2, 2, 3, 1]
    # The original sent the first question twice; ours sends both phrasings and both answers.
    (body,) = consistency
    user = body["messages"][1]["content"]
    assert "Question 1: What colour is the car?" in user and "Question 2: Which colour does the car have?" in user
    assert "Answer to question 2: con A2" in user


def movie_rows(model: str, tag: str) -> list[dict]:
    rows = []
    for movie in ("m0", "m1"):
        for qa_type, k in (("overview", 0), ("plot", 0), ("plot", 1), ("temporal", 0)):
            rows.append(prediction(f"{movie}_{qa_type}_{k}", "movie_qa_bench", f"{qa_type} question {k} of {movie}?",
                                   f"reference {qa_type} {k} {movie}", f"{tag} {movie} {qa_type} {k}",
                                   split="test", qa_type=qa_type, video_id=movie, model=model))
    return rows


# (first answer shown, second answer shown) -> (better, first score, second score). "ours" is the model.
PAIRS = {
    ("ours m0 overview 0", "base m0 overview 0"): ("first", 4.0, 2.0),
    ("ours m1 overview 0", "base m1 overview 0"): ("second", 1.0, 3.0),
    ("ours m0 plot 0", "base m0 plot 0"): ("first", 3.5, 3.0),
    ("ours m0 plot 1", "base m0 plot 1"): ("first", 4.5, 1.5),
    ("ours m1 plot 0", "base m1 plot 0"): ("second", 2.0, 2.5),
    ("ours m1 plot 1", "base m1 plot 1"): ("first", 3.0, 2.0),
    ("ours m0 temporal 0", "base m0 temporal 0"): ("first", 3.0, 1.0),
    ("ours m1 temporal 0", "base m1 temporal 0"): ("first", 2.5, 2.0),
    # Shown the other way round, this judge prefers whatever comes first (position bias) for some pairs.
    ("base m0 overview 0", "ours m0 overview 0"): ("first", 3.0, 3.5),
    ("base m1 overview 0", "ours m1 overview 0"): ("first", 3.0, 1.0),
    ("base m0 plot 0", "ours m0 plot 0"): ("second", 2.0, 4.0),
    ("base m0 plot 1", "ours m0 plot 1"): ("first", 2.5, 2.5),
    ("base m1 plot 0", "ours m1 plot 0"): ("first", 3.0, 2.0),
    ("base m1 plot 1", "ours m1 plot 1"): ("second", 1.0, 4.0),
    ("base m0 temporal 0", "ours m0 temporal 0"): ("first", 2.0, 2.0),
    ("base m1 temporal 0", "ours m1 temporal 0"): ("second", 1.5, 3.5),
}


def pair_judge(name, fields):
    assert name == "movie_compare"
    better, first, second = PAIRS[(fields["First answer"], fields["Second answer"])]
    return {"better": better, "scores": {"first": first, "second": second}}


def compare_files(tmp_path):
    ours = write_predictions(tmp_path / "ours.jsonl", movie_rows("org/llamavid-moviellm", "ours"))
    base = write_predictions(tmp_path / "base.jsonl", movie_rows("org/llamavid-baseline", "base"))
    return ours, base


def test_movie_compare_ratio_and_scores_per_question_type(tmp_path):
    ours, base = compare_files(tmp_path)
    out = tmp_path / "eval"
    with judge_server(pair_judge) as server:
        assert main(eval_args(server, ours, "movie-compare", out, "--baseline", str(base))) == 0
        assert server.totals.requests == 8
    run = results(out)
    m = run["metrics"]
    # overview: m0 won, m1 lost -> 1/2; scores (4 + 1) / 2 and (2 + 3) / 2
    assert m["overview"]["compare_ratio"] == pytest.approx({"model": 0.5, "baseline": 0.5})
    assert m["overview"]["score"] == pytest.approx({"model": 2.5, "baseline": 2.5})
    # plot: won 3 of 4; scores (3.5 + 4.5 + 2 + 3) / 4 and (3 + 1.5 + 2.5 + 2) / 4
    assert m["plot"]["compare_ratio"] == pytest.approx({"model": 0.75, "baseline": 0.25})
    assert m["plot"]["score"] == pytest.approx({"model": 13 / 4, "baseline": 9 / 4})
    # temporal: won both; (3 + 2.5) / 2 and (1 + 2) / 2
    assert m["temporal"]["compare_ratio"] == pytest.approx({"model": 1.0, "baseline": 0.0})
    assert m["temporal"]["score"] == pytest.approx({"model": 2.75, "baseline": 1.5})
    assert [m[t]["total"] for t in ("overview", "plot", "temporal")] == [2, 4, 2]  # counted, not hard-coded 100/200/100
    assert run["baseline_label"] == "org/llamavid-baseline" and run["run"] == "movie-compare-llamavid-moviellm-vs-llamavid-baseline"


def test_movie_compare_both_orders_cancels_position_bias(tmp_path):
    ours, base = compare_files(tmp_path)
    out = tmp_path / "eval"
    with judge_server(pair_judge) as server:
        assert main(eval_args(server, ours, "movie-compare", out, "--baseline", str(base), "--both-orders")) == 0
        assert server.totals.requests == 16
    m = results(out)["metrics"]
    # Each pair: half a win for each order the model wins; each model's score averaged over both positions.
    # overview m0: won forward, lost backward -> 0.5; m1: lost both -> 0.  Ratio (0.5 + 0) / 2.
    assert m["overview"]["compare_ratio"]["model"] == pytest.approx(0.25)
    assert m["overview"]["score"]["model"] == pytest.approx(((4 + 3.5) / 2 + (1 + 1) / 2) / 2)
    assert m["overview"]["score"]["baseline"] == pytest.approx(((2 + 3) / 2 + (3 + 3) / 2) / 2)
    # plot: m0p0 1, m0p1 0.5, m1p0 0, m1p1 1 -> 2.5 / 4
    assert m["plot"]["compare_ratio"]["model"] == pytest.approx(2.5 / 4)
    assert m["plot"]["score"]["model"] == pytest.approx(((3.5 + 4) / 2 + (4.5 + 2.5) / 2 + (2 + 2) / 2 + (3 + 4) / 2) / 4)
    # temporal: m0 0.5, m1 1
    assert m["temporal"]["compare_ratio"]["model"] == pytest.approx(0.75)
    assert m["temporal"]["score"]["baseline"] == pytest.approx(((1 + 2) / 2 + (2 + 1.5) / 2) / 2)
    # Position statistics: of 16 calls, the first-shown answer was chosen 11 times (8 forward: 6; 8 backward: 5).
    assert m["all"]["position"]["first_shown_chosen"] == pytest.approx(11 / 16)
    # Orders agree (same model preferred both times) on m0p0, m1p1, m1t0, m1o (baseline twice), m1p0 (baseline twice).
    assert m["all"]["position"]["orders_agree"] == pytest.approx(5 / 8)


def test_movie_score_per_question_type(tmp_path):
    scores = {"ours m0 overview 0": 4.0, "ours m1 overview 0": 2.5, "ours m0 plot 0": 3.0, "ours m0 plot 1": 1.0,
              "ours m1 plot 0": 5.0, "ours m1 plot 1": 0.5, "ours m0 temporal 0": 2.0, "ours m1 temporal 0": 3.5}

    def decide(name, fields):
        assert name == "movie_score"
        return {"score": scores[fields["Answer"]]}

    ours = write_predictions(tmp_path / "ours.jsonl", movie_rows("org/llamavid-moviellm", "ours"))
    out = tmp_path / "eval"
    with judge_server(decide) as server:
        assert main(eval_args(server, ours, "movie-score", out)) == 0
    m = results(out)["metrics"]
    assert m["overview"]["score"] == pytest.approx((4.0 + 2.5) / 2)
    assert m["plot"]["score"] == pytest.approx((3.0 + 1.0 + 5.0 + 0.5) / 4)
    assert m["temporal"]["score"] == pytest.approx((2.0 + 3.5) / 2)
    assert m["all"]["score"] == pytest.approx(sum(scores.values()) / 8)
    assert m["all"]["judged"] == 8


def test_ids_need_only_be_unique_within_a_split(tmp_path):
    """`moviellm answer` numbers Video-ChatGPT's questions per split: one file holding all three splits is valid."""
    from moviellm_model.evaluation.predictions import PredictionsError, read_predictions

    rows = [prediction("v1_0", "video_chatgpt", "What happens?", "A man cooks.", "a", split="generic"),
            prediction("v1_0", "video_chatgpt", "What comes first?", "He sits.", "b", split="temporal")]
    assert len(read_predictions(write_predictions(tmp_path / "ok.jsonl", rows)).rows) == 2
    with pytest.raises(PredictionsError, match="appears 2 times in split 'generic'"):
        read_predictions(write_predictions(tmp_path / "bad.jsonl", [rows[0], rows[0]]))
