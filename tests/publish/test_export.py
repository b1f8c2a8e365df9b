"""moviellm export llamavid: LongVideoQA conversations with 2 placeholders per frame, features or frames."""

from __future__ import annotations

import json
import pickle
import re

import numpy as np
import pytest
from safetensors import safe_open

from moviellm_data.export import ExportOptions, export_llamavid
from moviellm_data.shards import read_movies
from tests.publish.publish_support import cli, python

MOVIE_START = "Below is a movie. Memorize the content and answer my question after watching this movie."
MOVIE_END = "Now the movie end."


def _scripts(movies):
    return {script.id: (script, mp4) for script, mp4 in read_movies(movies, decode=False)}


def _check_movie_turn(value: str, script, question: str, per_frame: int = 2) -> None:
    """The human turn: wrapper, per frame <image> x per_frame then its subtitle, wrapper end, newline, question."""
    assert value.startswith(MOVIE_START) and value.endswith(f"{MOVIE_END}\n{question}")
    movie = value[len(MOVIE_START):-len(f"{MOVIE_END}\n{question}")]
    assert movie.count("<image>") == per_frame * script.num_frames
    pieces = re.split(f"(?:<image>){{{per_frame}}}", movie)
    assert pieces[0] == "" and len(pieces) == script.num_frames + 1
    assert pieces[1:] == [frame.subtitle or "" for frame in script.timeline]


def test_frames_export_has_the_longvideoqa_fields_and_two_placeholders_per_frame(movies, tmp_path):
    out = tmp_path / "export"
    result = cli("export", "llamavid", str(movies), "--out", str(out), "--no-progress")
    assert result.returncode == 0, result.stderr
    samples = json.loads((out / "long_videoqa.json").read_text())
    scripts = _scripts(movies)
    assert len(samples) == sum(len(s.qa) for s, _ in scripts.values())
    assert len({s["id"] for s in samples}) == len(samples)
    for sample in samples:
        assert set(sample) >= {"id", "video", "conversations"}
        script, mp4 = scripts[sample["movie_id"]]
        qa = script.qa[int(sample["id"].rsplit("_", 1)[1])]
        human, gpt = sample["conversations"]
        assert (human["from"], gpt["from"]) == ("human", "gpt") and gpt["value"] == qa.answer
        _check_movie_turn(human["value"], script, qa.question)
        assert sample["num_frames"] == script.num_frames and sample["evidence"] == [qa.evidence.start, qa.evidence.end]
        assert sample["video"] == f"videos/{script.id}.mp4"  # relative to OUT, the trainer's --video_folder
        assert (out / sample["video"]).read_bytes() == mp4
    again = cli("export", "llamavid", str(movies), "--out", str(out), "--no-progress")
    assert again.returncode == 0 and "0 written, 3 already there" in again.stdout


def test_qa_types_and_plain_prompt(movies, tmp_path):
    options = ExportOptions(out=tmp_path / "e", qa_types=["temporal", "plot"], prompt="plain", tokens_per_frame=3)
    export_llamavid(movies, options, progress=False)
    samples = json.loads((tmp_path / "e" / "long_videoqa.json").read_text())
    assert samples and {s["qa_type"] for s in samples} == {"temporal", "plot"}
    scripts = _scripts(movies)
    for sample in samples:
        script = scripts[sample["movie_id"]][0]
        value = sample["conversations"][0]["value"]
        assert not value.startswith(MOVIE_START) and value.count("<image>") == 3 * script.num_frames


@pytest.fixture(scope="module")
def tiny_llamavid(tmp_path_factory):
    """A tiny LLaMA-VID checkpoint saved with save_pretrained (vision: 28 px, patch 14 -> 1 + 4 tokens of width 32)."""
    torch = pytest.importorskip("torch")
    from moviellm_model import LlamaVidConfig, LlamaVidForConditionalGeneration

    torch.manual_seed(0)
    small = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    config = LlamaVidConfig(
        vision_config=dict(image_size=28, patch_size=14, **small),
        qformer_config=dict(vocab_size=100, encoder_hidden_size=32, cross_attention_frequency=2,
                            max_position_embeddings=64, **small),
        text_config=dict(vocab_size=120, pad_token_id=0, bos_token_id=1, eos_token_id=2, **small),
        num_query_tokens=4, image_token_index=120, video_token_index=121,
    )
    model = LlamaVidForConditionalGeneration(config).eval()
    folder = tmp_path_factory.mktemp("tiny-llamavid")
    model.save_pretrained(folder)
    return folder, model


def test_eva_features_are_the_vision_tower_output(movies, tiny_llamavid, tmp_path):
    import torch

    from moviellm_model import LlamaVidImageProcessor

    folder, model = tiny_llamavid
    result = export_llamavid(movies, ExportOptions(out=tmp_path / "eva", features="eva", model=str(folder)), progress=False)
    assert result.feature_shape == [12, 5, 32]
    processor = LlamaVidImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
    for movie_id, (script, _) in _scripts(movies).items():
        with safe_open(tmp_path / "eva" / "videos" / f"{movie_id}.safetensors", framework="numpy") as fh:
            feats, meta = fh.get_tensor("feats"), fh.metadata()
        assert feats.dtype == np.float16 and feats.shape == (script.num_frames, 1 + 4, 32)
        frames = next(m for s, m in read_movies(movies) if s.id == movie_id)
        with torch.no_grad():
            expected = model.model.get_vision_features(torch.from_numpy(processor(list(frames))["pixel_values"]))
        np.testing.assert_allclose(feats.astype(np.float32), expected.numpy(), rtol=1e-2, atol=1e-2)
        assert meta["inputs"].count("<image>") == script.num_frames and meta["movie_id"] == movie_id
    samples = json.loads((tmp_path / "eva" / "long_videoqa.json").read_text())
    assert all(s["video"].endswith(".safetensors") for s in samples)


def test_legacy_pickle_is_what_the_original_trainer_reads(movies, tiny_llamavid, tmp_path):
    folder, _ = tiny_llamavid
    out = tmp_path / "legacy"
    export_llamavid(movies, ExportOptions(out=out, features="eva", model=str(folder), legacy_pickle=True), progress=False)
    scripts = _scripts(movies)
    for sample in json.loads((out / "long_videoqa.json").read_text()):
        script = scripts[sample["movie_id"]][0]
        human = sample["conversations"][0]["value"]
        # --video_folder OUT, as the original stage-3 script passes its data root
        assert human.count("<image>") == 1 and sample["video"] == f"videos/{script.id}.pkl"
        with open(out / sample["video"], "rb") as fh:  # the test trusts its own file
            legacy = pickle.load(fh)
        assert legacy["feats"].dtype == np.float16 and legacy["feats"].shape == (script.num_frames, 5, 32)
        # What LLaMA-VID's train.py does with it (llamavid-spec.md 1.8 / 3.3): 2 placeholders per frame.
        expanded = human.replace("<image>", legacy["inputs"].replace("...", "").replace("<image>", "<image>" * 2))
        question = script.qa[int(sample["id"].rsplit("_", 1)[1])].question
        _check_movie_turn(expanded, script, question)


def test_bad_export_input_gets_one_sentence(movies, tmp_path):
    cases = [
        (("export", "llamavid", str(tmp_path / "nope"), "--out", str(tmp_path / "o1")), "does not exist"),
        (("export", "llamavid", str(movies), "--out", str(tmp_path / "o2"), "--features", "eva"), "needs --model"),
        (("export", "llamavid", str(movies), "--out", str(tmp_path / "o3"), "--legacy-pickle"), "--legacy-pickle"),
        (("export", "llamavid", str(movies), "--out", str(tmp_path / "o4"), "--model", str(tmp_path / "none")),
         "neither a checkpoint folder"),
    ]
    for args, expected in cases:
        result = cli(*args)
        assert result.returncode == 2 and result.stderr.count("\n") == 1 and expected in result.stderr, result.stderr
    # Without the model extra (no torch), EVA features explain themselves instead of failing with an ImportError.
    code = ("import sys; sys.modules['torch'] = None; from moviellm_data.cli import main; "
            f"sys.exit(main(['export', 'llamavid', {str(movies)!r}, '--out', {str(tmp_path / 'o5')!r}, "
            f"'--model', {str(movies)!r}]))")
    result = python(code)
    assert result.returncode == 2 and "need the model package" in result.stderr and result.stderr.count("\n") == 1
