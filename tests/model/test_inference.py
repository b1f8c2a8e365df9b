"""moviellm_model.inference: a video encoded once, its questions decoded together (shared prefix or batched prefill),
equal token for token to one question at a time through the processor and `generate`; settings; predictions file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from moviellm_data.errors import ConfigError
from moviellm_model.inference import (
    GenerationSettings,
    PredictionsFile,
    answer_questions,
    encode_features,
    encode_frames,
    resolve_qformer_query,
)
from moviellm_model.input_format import MOVIE_GENERATION_KWARGS, movie_qformer_text, render_vicuna_v1

QUESTIONS = [
    "Can you provide a brief overview of the movie in just a few sentences?",
    "Who is the main character?",
    "Can you outline the chronological sequence of events in the movie?",
]
NEW_TOKENS = 10


def movie(tiny_model, frames: int = 6, seed: int = 0):
    """Exported-style features [T, 1 + P, C] and the subtitle string of a small movie."""
    rng = np.random.default_rng(seed)
    vision = tiny_model.config.vision_config
    feats = rng.normal(size=(frames, vision.num_patches + 1, vision.hidden_size)).astype(np.float32)
    lines = ["", " He says hello.", "", " She opens the door.", "", " They run to the station at night."]
    return feats, "".join(f"<image>{lines[i % len(lines)]}" for i in range(frames))


def clip(frames: int = 5, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (frames, 40, 48, 3), dtype=np.uint8)


def one_at_a_time(model, processor, question: str, policy: str, feats=None, inputs=None, frames=None) -> str:
    """The reference: the processor's prompt and visual inputs for ONE question, then plain `generate`."""
    qformer = [movie_qformer_text(question, policy)]
    if feats is not None:
        encoded = processor(text=processor.build_movie_prompt(question, inputs=inputs), video_features=[feats[:, 1:]],
                            qformer_text=qformer, return_tensors="pt")
    else:
        prompt = render_vicuna_v1([{"role": "user", "content": "<image>\n" + question}])  # spec 6.1
        encoded = processor(text=prompt, videos=[frames], qformer_text=qformer, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**encoded, max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=0, eos_token_id=2)
    return processor.tokenizer.decode(out[0, encoded["input_ids"].shape[1]:], skip_special_tokens=True).strip()


class PrefillCounter:
    """Records (batch, length) of every language-model call longer than `min_length` tokens."""

    def __init__(self, model, min_length: int):
        self.calls: list[tuple[int, int]] = []
        self.min_length = min_length
        self.handle = model.model.language_model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        embeds = kwargs.get("inputs_embeds")
        if embeds is not None and embeds.shape[1] >= self.min_length:
            self.calls.append(tuple(embeds.shape[:2]))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


@pytest.mark.parametrize("cache", ["shared", "dynamic", "static"])
@pytest.mark.parametrize("policy", ["moviellm", "question"])
def test_movie_answers_equal_one_question_at_a_time(tiny_model, processor, policy, cache):
    feats, inputs = movie(tiny_model, frames=40)  # 80 visual tokens: longer than any question suffix
    video = encode_features(tiny_model, feats, inputs=inputs)
    settings = GenerationSettings(max_new_tokens=NEW_TOKENS)
    visual_tokens = video.num_frames * tiny_model.config.tokens_per_frame
    with PrefillCounter(tiny_model, min_length=visual_tokens) as counter:
        answers = answer_questions(tiny_model, processor, video, QUESTIONS, settings, qformer_query=policy,
                                   batch_size=2, cache_implementation=cache)
    expected = [one_at_a_time(tiny_model, processor, q, policy, feats=feats, inputs=inputs) for q in QUESTIONS]
    assert answers == expected
    assert all(answers), "every answer has tokens (none stopped at once)"
    if policy == "moviellm":
        assert counter.calls == [(1, counter.calls[0][1])], "the movie is prefilled once for all its questions"
    else:
        assert counter.calls[0][0] == 2 and len(counter.calls) == 2, "questions are prefilled as batches of 2"


@pytest.mark.parametrize("policy", ["question", "moviellm"])
def test_short_video_answers_equal_one_question_at_a_time(tiny_model, processor, policy):
    frames = clip()
    video = encode_frames(tiny_model, processor, list(frames), long=False)
    questions = ["what is the man doing?", "who opens the door?", "where is the dog?"]
    answers = answer_questions(tiny_model, processor, video, questions, GenerationSettings(max_new_tokens=NEW_TOKENS),
                               qformer_query=policy, batch_size=3)
    assert answers == [one_at_a_time(tiny_model, processor, q, policy, frames=frames) for q in questions]


def test_the_policy_changes_the_context_tokens(tiny_model, processor):
    """Otherwise the equality tests above could not tell the two policies apart."""
    feats, inputs = movie(tiny_model)
    video = encode_features(tiny_model, feats, inputs=inputs)
    tokens = {}
    for policy in ("question", "moviellm"):
        encoded = processor.encode_qformer_text([movie_qformer_text(QUESTIONS[1], policy)], return_tensors="pt")
        tokens[policy] = tiny_model.model.get_long_video_features(video.features, [video.num_frames],
                                                                  encoded["qformer_input_ids"],
                                                                  encoded["qformer_attention_mask"])
    context = slice(0, None, tiny_model.config.tokens_per_frame)  # every frame's first token is its context token
    assert not torch.allclose(tokens["question"][context], tokens["moviellm"][context], atol=1e-4)


def test_streamed_single_answer_and_sampling_is_reproducible(tiny_model, processor):
    from transformers.generation.streamers import BaseStreamer

    class Collect(BaseStreamer):
        def __init__(self):
            self.tokens, self.calls = [], 0

        def put(self, value):
            self.calls += 1
            if self.calls > 1:  # the first call is the prompt
                self.tokens += value.flatten().tolist()

        def end(self):
            pass

    feats, inputs = movie(tiny_model)
    video = encode_features(tiny_model, feats, inputs=inputs)
    streamer = Collect()
    [answer] = answer_questions(tiny_model, processor, video, [QUESTIONS[0]], GenerationSettings(max_new_tokens=6),
                                qformer_query="moviellm", streamer=streamer)
    assert processor.tokenizer.decode(streamer.tokens, skip_special_tokens=True).strip() == answer
    sampled = GenerationSettings(max_new_tokens=8, do_sample=True, temperature=0.9, top_p=0.95, seed=5)
    first = answer_questions(tiny_model, processor, video, QUESTIONS, sampled, qformer_query="question")
    again = answer_questions(tiny_model, processor, video, QUESTIONS, sampled, qformer_query="question")
    assert first == again


def test_mismatched_subtitles_are_refused(tiny_model):
    feats, inputs = movie(tiny_model, frames=4)
    with pytest.raises(ValueError, match="3 frame placeholders for 4 frames"):
        encode_features(tiny_model, feats, inputs=inputs.rsplit("<image>", 1)[0])


def test_settings_presets_and_policy_defaults(tiny_model):
    greedy = GenerationSettings.preset("greedy", max_new_tokens=64)
    assert greedy.generate_kwargs()["do_sample"] is False and greedy.record("moviellm", "p")["temperature"] is None
    original = GenerationSettings.preset("original", long_video=True)
    assert {k: getattr(original, k) for k in MOVIE_GENERATION_KWARGS} == MOVIE_GENERATION_KWARGS
    short = GenerationSettings.preset("original", long_video=False, top_p=0.7)
    assert (short.do_sample, short.temperature, short.top_p) == (True, 0.2, 0.7)
    assert GenerationSettings.preset("greedy", temperature=0.5).do_sample is True
    with pytest.raises(ValueError):
        GenerationSettings.preset("fancy")
    config = tiny_model.config
    assert resolve_qformer_query(None, config, long_video=True) == "moviellm"
    assert resolve_qformer_query(None, config, long_video=False) == "question"
    assert resolve_qformer_query("question", config, long_video=True) == "question"
    config.qformer_query = "question"  # what training records
    try:
        assert resolve_qformer_query(None, config, long_video=True) == "question"
    finally:
        del config.qformer_query


def test_predictions_file_drops_a_cut_line_and_refuses_another_run(tmp_path):
    path = tmp_path / "sub" / "predictions.jsonl"
    file = PredictionsFile(path)
    assert not path.exists(), "nothing is written before the first answer"
    line = {"id": "a", "split": "test", "benchmark": "b", "model": {"name_or_path": "m"}, "generation": {"seed": 0}}
    file.append(line)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write('{"id": "b", "split": "te')  # a kill in the middle of a line
    again = PredictionsFile(path)
    assert again.done() == {("test", "a")}
    assert path.read_text(encoding="utf-8") == json.dumps(line) + "\n"
    again.check_same_run("b", {"name_or_path": "m"}, {"seed": 0})
    with pytest.raises(ConfigError, match="another model"):
        again.check_same_run("b", {"name_or_path": "other"}, {"seed": 0})
    (tmp_path / "junk.jsonl").write_text("not json\n")
    with pytest.raises(ConfigError, match="line 1"):
        PredictionsFile(tmp_path / "junk.jsonl")
    with pytest.raises(ConfigError, match="is a folder"):
        PredictionsFile(tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="cannot write"):
        PredictionsFile(tmp_path / "file" / "predictions.jsonl")
