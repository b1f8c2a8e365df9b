"""Records -> ids and labels: the original's masking, the over-length policy, corrupt samples, export parity."""

from __future__ import annotations

import io
import json
import tarfile

import pytest
import torch

from moviellm_data.export import ExportOptions, export_llamavid
from moviellm_model.input_format import render_vicuna_v1
from moviellm_model.training import ConversationEncoder, LlavaJsonSource, MovieSource, SampleSkipped
from moviellm_model.training.encoding import render_with_answer_spans, subsample_frames
from moviellm_model.training.records import Movie, Record, VisualRef, iter_json_array, split_movie_message
from moviellm_model.training.stream import collate

from .conftest import IMAGE, original_labels


def _as_original(ids: list[int], processor) -> list[int]:
    return [IMAGE if i == processor.video_token_id else i for i in ids]


def _first_movie_record(source) -> Record:
    return next(iter(source))


def test_render_with_answer_spans_is_the_chat_template():
    turns = [("<image>\nWhat happens?", "A man walks a dog."), ("Where?", "In the park.")]
    text, spans = render_with_answer_spans(turns[0][0], turns)
    messages = [m for user, answer in turns for m in ({"role": "user", "content": user},
                                                      {"role": "assistant", "content": answer})]
    assert text == render_vicuna_v1(messages, add_generation_prompt=False)
    assert [text[a:b] for a, b in spans] == [" A man walks a dog.</s>", " In the park.</s>"]


def test_multi_turn_movie_labels_match_the_original(movies, spm_processor):
    """A whole movie as one conversation (all its QA as turns): ids and labels equal LLaMA-VID's preprocess_v1."""
    record = _first_movie_record(MovieSource(path=str(movies), conversation="movie"))
    assert len(record.turns) > 3
    sample = ConversationEncoder(spm_processor, max_length=100_000).encode(record)
    text, _ = render_with_answer_spans(
        record.movie.prefix + "".join("<image><image>" + s for s in record.movie.subtitles) + record.movie.suffix,
        record.turns)
    ids, labels = original_labels(text)
    assert _as_original(sample.input_ids, spm_processor) == ids
    assert sample.labels == labels
    trained = [i for i, label in enumerate(labels) if label != -100]
    assert trained and spm_processor.tokenizer.eos_token_id in [ids[i] for i in trained]  # "</s>" is trained on
    assert sample.qformer_text == record.turns[0][0]  # the bare first question, not the wrapper or subtitles


def test_longvideoqa_record_labels_match_the_original(movies, spm_processor, tmp_path):
    """A record of the LongVideoQA layout (what `moviellm export llamavid` writes) masked as the original does."""
    export_llamavid(movies, ExportOptions(out=tmp_path / "export"), progress=False)
    source = LlavaJsonSource(path=str(tmp_path / "export" / "long_videoqa.json"))
    item = next(iter_json_array(tmp_path / "export" / "long_videoqa.json"))
    record = _first_movie_record(source)
    sample = ConversationEncoder(spm_processor, max_length=100_000).encode(record)
    human, answer = item["conversations"][0]["value"], item["conversations"][1]["value"]
    text = render_vicuna_v1([{"role": "user", "content": human}, {"role": "assistant", "content": answer}],
                            add_generation_prompt=False)
    ids, labels = original_labels(text)
    assert _as_original(sample.input_ids, spm_processor) == ids
    assert sample.labels == labels
    assert sample.qformer_text == human.rsplit("\n", 1)[1]  # the question alone
    assert sample.visual.shape[0] == item["num_frames"]


def test_export_and_movie_folder_give_the_same_batch(movies, tiny_checkpoint, tmp_path):
    """Our dataset folder read directly and its LongVideoQA export (frames or EVA features) give identical batches."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_checkpoint)
    encoder = ConversationEncoder(processor, max_length=4096)
    for features in ("frames", "eva"):
        out = tmp_path / features
        export_llamavid(movies, ExportOptions(out=out, features=features,
                                              model=str(tiny_checkpoint) if features == "eva" else None),
                        progress=False)
        direct = MovieSource(path=str(movies), conversation="qa",
                             frames="tower" if features == "frames" else "features",
                             features_dir=None if features == "frames" else str(out))
        exported = LlavaJsonSource(path=str(out / "long_videoqa.json"))
        a_records, b_records = list(direct), list(exported)
        assert [r.id for r in a_records] == [r.id for r in b_records]
        for a, b in zip(a_records[:3], b_records[:3]):
            batch_a = collate([encoder.encode(a)], processor)
            batch_b = collate([encoder.encode(b)], processor)
            assert batch_a.keys() == batch_b.keys()
            for key in batch_a:
                assert torch.equal(batch_a[key], batch_b[key]), (features, key)
        visual_key = "video_features" if features == "eva" else "pixel_values_long_videos"
        assert visual_key in batch_a


def _movie_record(frames: int, turns: int, words: int = 3, visual: VisualRef | None = None) -> Record:
    subtitles = [" ".join(["line"] * words) if i % 2 == 0 else "" for i in range(frames)]
    qa = [(f"What happens in part {i}?", "The detective finds the letter at night. " * 2) for i in range(turns)]
    return Record(id=f"m{frames}x{turns}", source="test", turns=qa, question=qa[0][0],
                  movie=Movie(subtitles=subtitles, prefix="Below is a movie.", suffix="Now the movie end.\n" + qa[0][0],
                              visual=visual or VisualRef(kind="features", path="unused.safetensors")))


class _NoVisual(ConversationEncoder):
    """Encoder that skips reading frames (the policy is about text and counts)."""

    def _load_visual(self, record, kept):
        return torch.zeros(len(kept), 4, 176)


def test_over_length_policy_subsamples_frames_then_drops_turns(spm_processor):
    full = _NoVisual(spm_processor, max_length=100_000).encode(_movie_record(200, 3))
    assert full.adjustments == [] and full.visual.shape[0] == 200

    limit = len(full.input_ids) - 2 * 150  # room for about 50 of the 200 frames
    fitted = _NoVisual(spm_processor, max_length=limit, min_frames=16).encode(_movie_record(200, 3))
    assert fitted.adjustments == ["frames_subsampled"]
    assert len(fitted.input_ids) <= limit and 16 <= fitted.visual.shape[0] < 200
    assert sum(1 for x in fitted.labels if x != -100) == sum(1 for x in full.labels if x != -100)  # all answers kept
    video_ids = sum(1 for i in fitted.input_ids if i == spm_processor.video_token_id)
    assert video_ids == 2 * fitted.visual.shape[0]

    # min_frames no longer fit with three turns: trailing turns go, whole
    text_only = len(full.input_ids) - 2 * 200
    tight = _NoVisual(spm_processor, max_length=text_only - 40, min_frames=16).encode(_movie_record(200, 3))
    assert "turns_dropped" in tight.adjustments and len(tight.input_ids) <= text_only - 40
    ends = [i for i, x in enumerate(tight.input_ids) if x == spm_processor.tokenizer.eos_token_id]
    assert tight.labels[ends[-1]] == spm_processor.tokenizer.eos_token_id  # the last kept answer is whole

    with pytest.raises(SampleSkipped) as skipped:
        _NoVisual(spm_processor, max_length=30).encode(_movie_record(200, 3))
    assert skipped.value.reason == "too_long"


def test_subsampling_keeps_the_first_frame_and_all_dialogue():
    assert subsample_frames(10, 4) == [0, 3, 6, 9]
    from moviellm_model.training.encoding import merge_subtitles

    assert merge_subtitles(["a", "", "b", "c", "", "d"], [0, 3]) == ["a b", "c d"]


def test_corrupt_samples_are_skipped_with_a_reason(movies, tiny_checkpoint, tmp_path):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_checkpoint)
    encoder = ConversationEncoder(processor, max_length=4096)
    # a features file that is missing
    record = _first_movie_record(MovieSource(path=str(movies), conversation="qa"))
    missing = Record(id="x", source="t", turns=record.turns, question=record.question,
                     movie=Movie(record.movie.subtitles, record.movie.prefix, record.movie.suffix,
                                 VisualRef(kind="features", path=str(tmp_path / "none.safetensors"))))
    with pytest.raises(SampleSkipped, match="cannot read") as err:
        encoder.encode(missing)
    assert err.value.reason == "corrupt"
    # a tar whose second movie is cut short: the first movie still reads, the rest is one corrupt record
    shard = sorted(movies.glob("*.tar"))[0]
    data = shard.read_bytes()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
    cut = tmp_path / "cut" / "cut.tar"
    cut.parent.mkdir()
    cut.write_bytes(data[: members[3].offset_data + 100])
    records = list(MovieSource(path=[str(cut)], conversation="movie"))
    assert records[0].error is None and records[-1].error is not None
    with pytest.raises(SampleSkipped) as err:
        encoder.encode(records[-1])
    assert err.value.reason == "corrupt"
    # an mp4 member that is not a video
    good = records[0]
    bad = Record(id="y", source="t", turns=good.turns, question=good.question,
                 movie=Movie(good.movie.subtitles, good.movie.prefix, good.movie.suffix,
                             VisualRef(kind="frames", data=b"not a video")))
    with pytest.raises(SampleSkipped) as err:
        encoder.encode(bad)
    assert err.value.reason == "corrupt"


def test_llava_json_source_reads_the_original_layouts(tmp_path):
    """Text-only and `.pkl` samples; pickles only behind allow_pickle, read without running code."""
    import pickle

    import numpy as np

    feats = np.zeros((3, 5, 8), dtype=np.float16)
    with open(tmp_path / "tt0001.pkl", "wb") as fh:
        pickle.dump({"feats": feats, "inputs": "<image>Hi...<image><image>Bye."}, fh)
    items = [
        {"id": "t", "conversations": [{"from": "human", "value": "Hello?"}, {"from": "gpt", "value": "Hi."}]},
        {"id": "v", "video": "tt0001.pkl", "conversations": [{"from": "human", "value": "<image>\nWho waves?"},
                                                             {"from": "gpt", "value": "Anna."}]},
        {"id": "bad", "conversations": [{"from": "gpt", "value": "only"}]},
    ]
    (tmp_path / "data.json").write_text(json.dumps(items))
    closed = list(LlavaJsonSource(path=str(tmp_path / "data.json")))
    assert closed[0].modality == "text" and closed[0].error is None
    assert "allow_pickle" in closed[1].error and closed[2].error
    opened = list(LlavaJsonSource(path=str(tmp_path / "data.json"), allow_pickle=True))
    movie = opened[1].movie
    assert movie.subtitles == ["Hi", "", "Bye."] and movie.suffix == "\nWho waves?"  # "..." dropped as the original
    assert opened[1].question == "Who waves?"
    # a pickle that would run code is refused by the restricted unpickler
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    with open(tmp_path / "tt0001.pkl", "wb") as fh:
        pickle.dump({"feats": Evil(), "inputs": "<image>"}, fh)
    assert "not an original" in list(LlavaJsonSource(path=str(tmp_path / "data.json"), allow_pickle=True))[1].error


def test_json_array_is_read_incrementally(tmp_path):
    items = [{"id": i, "text": "x" * (i % 50)} for i in range(3000)]
    (tmp_path / "a.json").write_text(json.dumps(items, indent=1))
    assert list(iter_json_array(tmp_path / "a.json", chunk_size=256)) == items
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps(i) for i in items[:10]) + "\n")
    assert list(iter_json_array(tmp_path / "b.jsonl", chunk_size=64)) == items[:10]


def test_split_movie_message_inverts_the_layouts():
    assert split_movie_message("Below.<image><image>Hi<image><image>Now the movie end.\nWhy?", 2) == (
        "Below.", ["Hi", ""], "Now the movie end.\nWhy?")
    assert split_movie_message("<image>a<image><image>b\nWhy?") == ("", ["a", "", "b"], "\nWhy?")
    assert split_movie_message("no movie") is None
    with pytest.raises(ValueError):
        split_movie_message("<image>a<image>b", 2)
