"""The whole loop a user runs, on the CPU: generate movies -> train on them -> answer their benchmark -> judge the
answers -> the results in the trained model's card. Each verb is tested on its own elsewhere; this checks that what
one writes is what the next reads (the recipe's query policy, predictions.jsonl, results.json, the model-index)."""

from __future__ import annotations

import json
from pathlib import Path

from huggingface_hub import ModelCard

from moviellm_data.builders.movie_qa_bench import pack_benchmark
from moviellm_data.cli import main
from tests.evaluation.judge_support import SECRET, eval_args, judge_server
from tests.publish.publish_support import make_movies

ROOT = Path(__file__).resolve().parents[1]


def test_generate_train_answer_judge(tmp_path, monkeypatch):
    movies = make_movies(tmp_path / "movies", movies=2)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text((ROOT / "configs" / "tiny-cpu.yaml").read_text()
                      + f"data:\n  - {{type: movies, path: {movies}}}\n")
    model = tmp_path / "model"
    assert main(["train", "--config", str(recipe), "--output-dir", str(model), "--no-progress", "--max-steps", "2",
                 "--qformer-query", "moviellm", "--save-steps", "100"]) == 0

    bench = pack_benchmark("from-movies", movies, tmp_path / "bench")
    predictions = tmp_path / "predictions.jsonl"
    assert main(["answer", "--model", str(model), "--benchmark", str(bench), "--out", str(predictions),
                 "--max-new-tokens", "3", "--no-progress"]) == 0
    lines = [json.loads(line) for line in predictions.read_text().splitlines()]
    assert len(lines) == 2 * 4 and {line["qa_type"] for line in lines} == {"overview", "plot", "temporal"}
    assert {line["generation"]["qformer_query"] for line in lines} == {"moviellm"}  # the policy training recorded

    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with judge_server(lambda name, fields: {"score": 3.0}) as server:
        assert main(eval_args(server, predictions, "movie-score", tmp_path / "eval", "--model-card", str(model))) == 0
    (run,) = json.loads((tmp_path / "eval" / "results.json").read_text())["runs"].values()
    assert run["predictions"]["lines"] == 8 and run["command"].startswith("moviellm eval --predictions")
    judged = {kind: (m["judged"], m["unjudged"], m["score"]) for kind, m in run["metrics"].items()}
    assert judged["overview"] == (2, 0, 3.0) and judged["plot"] == (4, 0, 3.0) and judged["temporal"] == (2, 0, 3.0)
    card = ModelCard.load(model / "README.md")
    assert card.data.eval_results and {r.metric_value for r in card.data.eval_results} == {3.0}
    assert "final training loss" in card.text.lower()  # the training part of the card survived the merge
