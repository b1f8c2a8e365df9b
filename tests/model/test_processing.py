"""LlamaVidProcessor: token ids equal the original tokenisation, image/video preprocessing, templates, Q-Former text."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoProcessor

from moviellm_model import LlamaVidImageProcessor
from moviellm_model.processing_llamavid import (
    MOVIE_PROMPT_END,
    MOVIE_PROMPT_START,
    MOVIELLM_QFORMER_QUESTIONS,
    VICUNA_V1_SYSTEM,
    LlamaVidProcessor,
    load_video_frames,
    render_vicuna_v1,
)

from .conftest import DATA, random_images

IMAGE_TOKEN_INDEX = -200


def tokenizer_image_token(prompt, tokenize, bos_token_id, image_token_index=IMAGE_TOKEN_INDEX):
    """LLaVA's mm_utils.tokenizer_image_token, as llamavid-spec.md section 1.9 describes it."""
    prompt_chunks = [tokenize(chunk) for chunk in prompt.split("<image>")]

    def insert_separator(items, sep):
        return [element for sublist in zip(items, [sep] * len(items)) for element in sublist][:-1]

    input_ids, offset = [], 0
    if prompt_chunks and prompt_chunks[0] and prompt_chunks[0][0] == bos_token_id:
        offset = 1
        input_ids.append(prompt_chunks[0][0])
    for chunk in insert_separator(prompt_chunks, [image_token_index] * (offset + 1)):
        input_ids.extend(chunk[offset:])
    return input_ids


def expand(ids, placeholder_id, per_placeholder):
    out = []
    for token in ids:
        out.extend([placeholder_id] * per_placeholder if token == IMAGE_TOKEN_INDEX else [token])
    return out


PROMPTS = [
    render_vicuna_v1([{"role": "user", "content": "Describe the image in detail."}]),
    render_vicuna_v1([{"role": "user", "content": "<image>\nWhat happens in the video?"}]),
    "USER: <image>\nWho is the main character? <image>\nWhat happens? ASSISTANT:",
    # a movie, as the original builds it: every frame "<image>" doubled, subtitles in between
    MOVIE_PROMPT_START + "<image><image>She opens the door.<image><image><image><image>He says hello."
    + MOVIE_PROMPT_END + "\nCan you outline the chronological sequence of events in the movie?",
]


@pytest.mark.parametrize("prompt", PROMPTS)
def test_ids_equal_original_tokenisation(processor, prompt):
    tok = processor.tokenizer
    reference = tokenizer_image_token(prompt, lambda s: tok(s).input_ids, tok.bos_token_id)
    count = prompt.count("<image>")
    assert processor.original_input_ids(prompt) == reference
    tpf = processor.tokens_per_frame()
    assert tpf == 2
    images = random_images(count) if count else None
    batch = processor(text=prompt, images=images, qformer_text=["what"] * count if count else None)
    assert batch["input_ids"][0] == expand(reference, processor.image_token_id, tpf)
    assert batch["input_ids"][0][0] == tok.bos_token_id and batch["input_ids"][0].count(tok.bos_token_id) == 1


def test_chunk_after_placeholder_has_its_own_dummy_prefix(processor):
    """A naive port (one tokenizer call, <image> as an added token) would put '<0x0A>' right after the image."""
    ids = processor.original_input_ids("USER: <image>\nWhat happens?")
    after = ids[ids.index(IMAGE_TOKEN_INDEX) + 1 :]
    assert processor.tokenizer.convert_ids_to_tokens(after[:2]) == ["▁", "<0x0A>"]
    whole = processor.tokenizer("USER: <image>\nWhat happens?").input_ids
    assert processor.image_token_id in whole  # <image> is a special token of the tokenizer ...
    naive_after = whole[whole.index(processor.image_token_id) + 1 :]
    assert naive_after != after  # ... but tokenising the whole string would give different ids


def test_sentencepiece_llama_tokenizer_matches_sentencepiece(tmp_path):
    """With a real SentencePiece model (what the releases ship), ids equal sentencepiece's own chunk-wise encoding."""
    spm = pytest.importorskip("sentencepiece", reason="sentencepiece is needed to read tokenizer.model")
    pytest.importorskip("google.protobuf", reason="protobuf is needed to convert tokenizer.model")
    from transformers import AutoTokenizer

    from .conftest import build_bert_folder, load_bert_tokenizer

    shutil.copy(DATA / "tiny_llama_spm.model", tmp_path / "tokenizer.model")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
        "pad_token": None, "add_bos_token": True, "add_eos_token": False, "legacy": False, "padding_side": "right",
    }))
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "tokenizer.model"))
    proc = LlamaVidProcessor(
        image_processor=LlamaVidImageProcessor(size=28, crop_size=28),
        tokenizer=AutoTokenizer.from_pretrained(tmp_path),
        qformer_tokenizer=load_bert_tokenizer(build_bert_folder(tmp_path / "bert")),
        num_patches=4,
    )
    prompts = PROMPTS + [
        MOVIE_PROMPT_START + "<image><image> Hello there.<image><image> 123 the end" + MOVIE_PROMPT_END + "\nWhy?",
        "<image>\n\nDescribe  the   image.",
    ]
    for prompt in prompts:
        reference = tokenizer_image_token(prompt, lambda s: [1] + sp.encode(s), 1)
        assert proc.original_input_ids(prompt) == reference, prompt


def test_image_processor_matches_transformers_clip(processor):
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    ours = type(processor.image_processor)()  # 224 defaults
    clip = CLIPImageProcessorPil()
    images = random_images(2, size=(300, 250), seed=1) + random_images(1, size=(200, 410), seed=2)
    expected = clip(images, return_tensors="np")["pixel_values"]
    got = ours(images, return_tensors="np")["pixel_values"]
    assert got.shape == (3, 3, 224, 224) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_pad_to_square_uses_the_mean_colour():
    ip = LlamaVidImageProcessor(size=28, crop_size=28)
    assert ip.background_color == (122, 116, 104)
    wide = Image.new("RGB", (56, 28), (255, 255, 255))
    padded = ip(wide, do_pad_to_square=True)["pixel_values"][0]
    plain = ip(wide)["pixel_values"][0]
    bg = (np.array([122, 116, 104]) / 255 - np.array(ip.image_mean)) / np.array(ip.image_std)
    np.testing.assert_allclose(padded[:, 0, 0], bg, atol=1e-5)  # top rows are padding
    np.testing.assert_allclose(padded[:, 14, 14], plain[:, 14, 14], atol=1e-5)  # white centre


def _write_video(path: Path, colours, fps: int):
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for colour in colours:
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), colour, dtype=np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def test_video_decoding_samples_one_frame_per_second(tmp_path):
    colours = [(250, 10, 10), (10, 250, 10), (10, 10, 250)] * 3  # 9 frames at 3 fps = 3 seconds
    _write_video(tmp_path / "v.mp4", colours, fps=3)
    frames = load_video_frames(tmp_path / "v.mp4", fps=1.0)
    assert len(frames) == 3
    for frame in frames:  # frames 0, 3, 6 are all red
        assert frame.shape == (48, 64, 3)
        assert abs(frame[..., 0].mean() - 250) < 12 and frame[..., 1].mean() < 30
    two = load_video_frames(tmp_path / "v.mp4", fps=3.0)
    assert len(two) == 9
    given = np.zeros((5, 10, 12, 3), dtype=np.uint8)
    assert len(load_video_frames(given)) == 5
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_video_frames(tmp_path / "missing.mp4")


def test_short_video_inputs(processor, tmp_path):
    _write_video(tmp_path / "clip.mp4", [(200, 30, 30)] * 6, fps=2)
    prompt = render_vicuna_v1([{"role": "user", "content": "<image>\nWhat happens in the video?"}])
    batch = processor(text=prompt, videos=[tmp_path / "clip.mp4"], return_tensors="pt")
    assert batch["pixel_values_videos"].shape == (3, 3, 28, 28)
    assert batch["video_num_frames"].tolist() == [3]
    assert int((batch["input_ids"] == processor.video_token_id).sum()) == 3 * 2
    # default Q-Former text: the user turn without the placeholder and newlines
    question = processor.qformer_tokenizer.decode(batch["qformer_input_ids"][0], skip_special_tokens=True)
    assert question == "what happens in the video?"


def test_chat_template_file_equals_vicuna_v1(processor):
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What happens?"}]},
        {"role": "assistant", "content": "A man walks a dog."},
        {"role": "user", "content": "Where?"},
    ]
    expected = f"{VICUNA_V1_SYSTEM} USER: <image>\nWhat happens? ASSISTANT: A man walks a dog.</s>USER: Where? ASSISTANT:"
    assert render_vicuna_v1(messages) == expected
    assert processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == expected
    system = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert processor.apply_chat_template(system, tokenize=False, add_generation_prompt=False) == "Be brief. USER: Hi "


def test_apply_chat_template_tokenized(processor):
    image = random_images(1, seed=3)[0]
    messages = [{"role": "user", "content": [{"type": "image", "image": image},
                                             {"type": "text", "text": "Who is the main character?"}]}]
    out = processor.apply_chat_template(messages, tokenize=True, return_dict=True, return_tensors="pt",
                                        add_generation_prompt=True)
    prompt = render_vicuna_v1([{"role": "user", "content": "<image>\nWho is the main character?"}])
    expected = processor(text=prompt, images=[image], return_tensors="pt")
    for key in ("input_ids", "pixel_values", "qformer_input_ids"):
        assert torch.equal(out[key], expected[key]), key
    assert processor.qformer_tokenizer.decode(out["qformer_input_ids"][0], skip_special_tokens=True) == (
        "who is the main character?")


def test_movie_prompt_and_long_video_placeholders(processor):
    prompt = processor.build_movie_prompt("Who opens the door?", subtitles=["She opens the door.", "", "Bye."])
    assert prompt == (
        f"{VICUNA_V1_SYSTEM} USER: {MOVIE_PROMPT_START}<image>She opens the door.<image><image>Bye."
        f"{MOVIE_PROMPT_END}\nWho opens the door? ASSISTANT:"
    )
    features = torch.randn(3, 4, 176)
    batch = processor(text=prompt, video_features=[features], qformer_text=["Who opens the door?"], return_tensors="pt")
    # the original doubles every <image> and puts one visual token on each: same ids
    doubled = prompt.replace("<image>", "<image><image>")
    reference = expand(processor.original_input_ids(doubled), processor.video_token_id, 1)
    assert batch["input_ids"][0].tolist() == reference
    assert batch["video_features"].shape == (3, 4, 176) and batch["video_features_num_frames"].tolist() == [3]
    single = processor(text=processor.build_movie_prompt("Why?", num_frames=1).replace("<image>", "<video>"),
                       video_features=[features], qformer_text="Why?")
    assert single["input_ids"][0].count(processor.video_token_id) == 3 * 2  # one placeholder for the whole movie
    with pytest.raises(ValueError, match="qformer_text"):
        processor(text=prompt, video_features=[features])
    with pytest.raises(ValueError, match="placeholders"):
        processor(text=prompt + "<image>", video_features=[features], qformer_text="x")


def test_qformer_text_encoding(processor):
    qtok = processor.qformer_tokenizer
    batch = processor(text="<image>\nwhat", images=random_images(1), qformer_text=["Who is the main character?"])
    ids = batch["qformer_input_ids"][0]
    assert ids[0] == qtok.cls_token_id and ids[-1] == qtok.sep_token_id
    assert qtok.convert_ids_to_tokens(ids[1:-1]) == ["who", "is", "the", "main", "character", "?"]
    assert len(qtok) == len(qtok.get_vocab()) and qtok.bos_token == "[DEC]"
    # MovieLLM's fixed prompt: a BERT sentence pair
    pair = processor(text="<image>\nx", images=random_images(1), qformer_text=[MOVIELLM_QFORMER_QUESTIONS])
    assert pair["qformer_input_ids"][0].count(qtok.sep_token_id) == 2
    # left truncation to qformer_max_length
    long_question = " ".join(["door"] * 300) + " the dog"
    cut = processor(text="<image>\nx", images=random_images(1), qformer_text=[long_question])["qformer_input_ids"][0]
    assert len(cut) == processor.qformer_max_length
    assert qtok.convert_ids_to_tokens(cut[-3:]) == ["the", "dog", "[SEP]"] and cut[0] == qtok.cls_token_id
    # padding between questions of different lengths
    two = processor(text=["<image>\nx", "<image>\ny"], images=random_images(2), qformer_text=["a", "a dog walks"],
                    return_tensors="pt")
    assert two["qformer_attention_mask"].tolist()[0][-2:] == [0, 0]


def test_processor_checks_counts(processor):
    with pytest.raises(ValueError, match="image placeholders"):
        processor(text="<image> <image>", images=random_images(1))
    with pytest.raises(ValueError, match="no video"):
        processor(text="<image> and <video>", images=random_images(1))


def test_processor_round_trip_through_auto_processor(processor, tmp_path):
    processor.save_pretrained(tmp_path)
    assert (tmp_path / "chat_template.jinja").is_file() and (tmp_path / "qformer_tokenizer").is_dir()
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded) is LlamaVidProcessor
    assert (loaded.num_patches, loaded.compress_type) == (processor.num_patches, processor.compress_type)
    images = random_images(2, seed=5)
    a = processor(text=PROMPTS[2], images=images, return_tensors="pt")
    b = loaded(text=PROMPTS[2], images=images, return_tensors="pt")
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert loaded.chat_template == processor.chat_template


def test_left_padding_for_batched_generation(processor):
    prompts = ["<image>\nWhat happens in the video?", "<image>\nWho?"]
    tok = processor.tokenizer
    side = tok.padding_side
    try:
        tok.padding_side = "left"
        batch = processor(text=prompts, images=random_images(2), return_tensors="pt")
    finally:
        tok.padding_side = side
    assert batch["attention_mask"][1, 0] == 0 and batch["attention_mask"][1, -1] == 1
    assert batch["input_ids"][1, 0] == (tok.pad_token_id or 0)


def test_image_processor_save_and_load_alone(tmp_path):
    ip = LlamaVidImageProcessor(size=336, crop_size=336, do_pad_to_square=True)
    ip.save_pretrained(tmp_path)
    loaded = LlamaVidImageProcessor.from_pretrained(tmp_path)
    assert (loaded.size, loaded.crop_size, loaded.do_pad_to_square) == (ip.size, ip.crop_size, True)
    image = random_images(1, size=(50, 70))[0]
    np.testing.assert_array_equal(ip(image)["pixel_values"], loaded(image)["pixel_values"])
    from moviellm_model import LlamaVidConfig

    LlamaVidConfig().save_pretrained(tmp_path)
    try:
        from transformers import AutoImageProcessor

        auto = AutoImageProcessor.from_pretrained(tmp_path)
    except ImportError:  # transformers 5.17 offers AutoImageProcessor only with torchvision installed
        return
    assert type(auto) is LlamaVidImageProcessor and auto.size == {"shortest_edge": 336}
