"""Results reach the model card's model-index, and `moviellm push` of the model folder shows them on the Hub."""

from __future__ import annotations

import json

import pytest
from huggingface_hub import ModelCard

from moviellm_data.card import is_unedited, write_model_card
from moviellm_data.cli import main
from tests.hub.hub_server import HubServer
from tests.publish.publish_support import cli, python

from .judge_support import eval_args, judge_server, prediction, write_predictions


def model_folder(tmp_path):
    folder = tmp_path / "llamavid-tiny"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llamavid"}))
    (folder / "model.safetensors").write_bytes(b"\0" * 64)  # stands in for the weights: push does not read them
    write_model_card(folder, "llamavid-tiny", base_model="lmsys/vicuna-7b-v1.5", training="Stage 3, 1 step.")
    return folder


_READ_BACK = """
import json
from huggingface_hub import ModelCard
card = ModelCard.load("org/llamavid-tiny")
print(json.dumps([[r.dataset_name, r.metric_name, r.metric_value, r.metric_config] for r in card.data.eval_results]))
"""


def test_eval_results_go_into_the_model_card_and_push_shows_them_on_the_hub(tmp_path):
    folder = model_folder(tmp_path)
    rows = [prediction(f"v{i}_0", "msvd_qa", f"q{i}?", f"r{i}", "right" if i < 3 else "wrong") for i in range(4)]
    preds = write_predictions(tmp_path / "preds.jsonl", rows)
    movie = [prediction(f"m0_{t}_0", "movie_qa_bench", f"{t}?", "ref", f"ours {t}", qa_type=t)
             for t in ("overview", "plot", "temporal")]
    movie_preds = write_predictions(tmp_path / "movie.jsonl", movie)

    def decide(name, fields):
        if name == "movie_score":
            return {"score": {"ours overview": 4.0, "ours plot": 2.5, "ours temporal": 1.5}[fields["Answer"]]}
        right = fields["Predicted answer"] == "right"
        return {"verdict": "yes" if right else "no", "score": 4 if right else 1}

    with judge_server(decide) as server:
        assert main([*eval_args(server, preds, "msvd-qa", tmp_path / "eval"), "--model-card", str(folder),
                     "--dataset-id", "org/msvd-qa"]) == 0
        assert main([*eval_args(server, movie_preds, "movie-score", tmp_path / "eval"), "--model-card", str(folder)]) == 0
        # Judged again (say, with another judge), a result replaces its earlier value instead of adding a row.
        assert main([*eval_args(server, preds, "msvd-qa", tmp_path / "eval"), "--model-card", str(folder),
                     "--dataset-id", "org/msvd-qa"]) == 0

    text = (folder / "README.md").read_text()
    assert is_unedited(text)  # still moviellm's card: the Evaluation table was rewritten with the model-index
    card = ModelCard(text)
    got = {(r.dataset_type, r.metric_name): r.metric_value for r in card.data.eval_results}
    assert got == {("org/msvd-qa", "Accuracy (%)"): 75.0, ("org/msvd-qa", "Score (0-5)"): 3.25,
                   ("movie_qa_bench", "Overview score (0-5)"): 4.0, ("movie_qa_bench", "Plot score (0-5)"): 2.5,
                   ("movie_qa_bench", "Temporal score (0-5)"): 1.5,
                   ("movie_qa_bench", "All questions score (0-5)"): pytest.approx((4.0 + 2.5 + 1.5) / 3, abs=1e-4)}
    assert "| MSVD-QA | Accuracy (%) | 75.0 |" in text and "Stage 3, 1 step." in text
    assert all("judge-model-2026-01-01" in r.metric_config for r in card.data.eval_results)

    with HubServer() as hub:
        env = hub.env(tmp_path / "hf-home")
        pushed = cli("push", str(folder), "--repo", "org/llamavid-tiny", "--uploader", "commits", "--no-progress", env=env)
        assert pushed.returncode == 0, pushed.stderr
        remote = hub.files("model", "org/llamavid-tiny")
        assert {"README.md", "config.json", "model.safetensors"} <= set(remote)
        assert hub.commits("model", "org/llamavid-tiny")[-1].changed == ["README.md"]  # the card goes last
        read = python(_READ_BACK, env=env)
    assert read.returncode == 0, read.stderr[-2000:]
    on_hub = {(name, metric): value for name, metric, value, _ in json.loads(read.stdout.strip().splitlines()[-1])}
    assert on_hub[("MSVD-QA", "Accuracy (%)")] == 75.0
    assert on_hub[("MovieLLM long-video QA", "Temporal score (0-5)")] == 1.5


def test_a_hand_edited_card_keeps_its_text_and_gets_the_model_index(tmp_path):
    folder = model_folder(tmp_path)
    card = folder / "README.md"
    card.write_text(card.read_text().replace("Stage 3, 1 step.", "Trained by hand, notes of a person."))
    rows = [prediction("v0_0", "msvd_qa", "q?", "r", "right")]
    preds = write_predictions(tmp_path / "preds.jsonl", rows)
    with judge_server(lambda name, fields: {"verdict": "yes", "score": 5}) as server:
        assert main([*eval_args(server, preds, "msvd-qa", tmp_path / "eval"), "--model-card", str(folder)]) == 0
    text = card.read_text()
    assert "Trained by hand, notes of a person." in text and not is_unedited(text)
    assert [r.metric_value for r in ModelCard(text).data.eval_results] == [100.0, 5.0]
