"""Dataset and model cards: Hub metadata that parses, statistics from the data, hand edits kept."""

from __future__ import annotations

import shutil
from collections import Counter

import numpy as np
import pytest
from huggingface_hub import DatasetCard, ModelCard
from safetensors.numpy import save

from moviellm_data.card import (
    CardError,
    EvalRow,
    card_features,
    is_unedited,
    load_card,
    model_card_text,
    write_card,
    write_dataset_card,
)
from moviellm_data.features import movie_features
from moviellm_data.kinds import refresh_card
from moviellm_data.pipeline import GenerateOptions, generate
from moviellm_data.renderers import StoryboardRenderer
from moviellm_data.shards import read_manifest, read_movies
from moviellm_data.writers import ProceduralWriter


def test_generated_card_has_the_hub_metadata_and_the_statistics(movies):
    card = DatasetCard.load(movies / "README.md")
    meta = card.data.to_dict()
    assert meta["license"] and "moviellm" in meta["tags"]
    assert meta["task_categories"] == ["video-text-to-text", "visual-question-answering"]
    assert meta["size_categories"] == ["n<1K"]
    assert meta["configs"][0]["data_files"] == [{"split": "train", "path": "movies-*.tar"}]
    assert card_features(card) == movie_features()
    assert meta["dataset_info"]["splits"][0]["num_examples"] == 3

    scripts = [s for s, _ in read_movies(movies, decode=False)]
    qa = Counter(q.type for s in scripts for q in s.qa)
    text = card.text
    assert f"| movies | {len(scripts)} |" in text
    assert f"{sum(s.num_frames for s in scripts)} (" in text
    assert f"| QA pairs | {sum(qa.values())} (" + ", ".join(f"{k} {v}" for k, v in sorted(qa.items())) + ")" in text
    for genre in {s.genre for s in scripts}:
        assert genre in text
    assert "writer: procedural" in text and "renderer: storyboard" in text and "128 x 96" in text
    assert is_unedited((movies / "README.md").read_text())


def test_refresh_for_push_adds_repo_id_and_a_deterministic_contact_sheet(movies, tmp_path):
    folder = shutil.copytree(movies, tmp_path / "m")
    refresh_card(folder, repo_id="org/name")
    sheet = (folder / "contact_sheet.png").read_bytes()
    text = (folder / "README.md").read_text()
    assert 'load_dataset("org/name"' in text and "](contact_sheet.png)" in text
    refresh_card(folder, repo_id="org/name")
    assert (folder / "contact_sheet.png").read_bytes() == sheet
    assert (folder / "README.md").read_text() == text


def test_a_hand_edited_card_is_never_overwritten(movies, tmp_path):
    folder = shutil.copytree(movies, tmp_path / "m")
    card = folder / "README.md"
    card.write_text(card.read_text().replace("## Limitations", "## Our notes\n\nKeep me.\n\n## Limitations"))
    assert not is_unedited(card.read_text())
    edited = card.read_text()
    write_dataset_card(folder, read_manifest(folder / "manifest.jsonl"), {}, repo_id="org/x")
    assert card.read_text() == edited
    assert write_card(tmp_path / "new.md", "---\na: 1\n---\nbody\n") and is_unedited((tmp_path / "new.md").read_text())


def test_style_embeddings_are_declared_when_the_samples_carry_them(tmp_path):
    class StyledStoryboard(StoryboardRenderer):
        def style_embedding(self, script):
            return save({"clip_l": np.zeros((1, 8), np.float32), "clip_g": np.zeros((1, 16), np.float32)})

    out = tmp_path / "styled"
    generate(GenerateOptions(out=out, movies=1, seed=1), ProceduralWriter("tiny"), StyledStoryboard(128, 96), progress=False)
    assert card_features(load_card(out / "README.md")) == movie_features(with_style=True)


@pytest.mark.parametrize("content, expected", [
    (None, "does not exist"),
    ("# just markdown\n", "no YAML header"),
    ("---\nlicense: [mit\n---\n# x\n", "does not parse"),
    ("---\n- a\n- b\n---\n# x\n", "not valid card metadata"),
])
def test_cards_that_do_not_parse_get_one_sentence(tmp_path, content, expected):
    path = tmp_path / "README.md"
    if content is not None:
        path.write_text(content)
    with pytest.raises(CardError) as err:
        load_card(path)
    message = str(err.value)
    assert expected in message and "\n" not in message and message.endswith(".")


def test_model_card_carries_a_model_index_that_huggingface_hub_reads(tmp_path):
    rows = [EvalRow("visual-question-answering", "org/msvd-qa", "MSVD-QA", "accuracy", 56.7, judge="gpt-3.5-turbo-0125"),
            EvalRow("video-text-to-text", "org/movie-qa-bench", "MovieLLM long-video QA", "win_rate", 0.61,
                    metric_name="overview win rate")]
    text = model_card_text("llamavid-7b-moviellm", base_model="lmsys/vicuna-7b-v1.5", datasets=["org/movies"],
                           results=rows, model_facts=[("LLM", "Vicuna-7B v1.5"), ("tokens per frame", 2)])
    card = ModelCard(text)
    results = {(r.dataset_name, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert results == {("MSVD-QA", "accuracy"): 56.7, ("MovieLLM long-video QA", "win_rate"): 0.61}
    assert card.data.base_model == "lmsys/vicuna-7b-v1.5" and card.data.datasets == ["org/movies"]
    assert "| MSVD-QA | accuracy | 56.7 | gpt-3.5-turbo-0125 |" in text and "| tokens per frame | 2 |" in text

