"""LlamaVidForConditionalGeneration: save/load, generate for images / short videos / long videos, visual tokens."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, AutoProcessor

from moviellm_model import LlamaVidConfig, LlamaVidForConditionalGeneration, LlamaVidModel
from moviellm_model.processing_llamavid import render_vicuna_v1

from .conftest import make_model, random_images


def image_inputs(processor, question="What happens in the video?", count=1, seed=0):
    prompt = render_vicuna_v1([{"role": "user", "content": "<image>\n" * count + question}])
    return processor(text=prompt, images=random_images(count, seed=seed), return_tensors="pt")


def greedy_without_cache(model, inputs, steps):
    """Reference decoding: full forward over the whole sequence at every step."""
    ids = inputs["input_ids"]
    visual = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
    for _ in range(steps):
        with torch.no_grad():
            logits = model(input_ids=ids, **visual).logits
        ids = torch.cat([ids, logits[:, -1:].argmax(-1)], dim=1)
    return ids


def test_round_trip_through_auto_classes(saved_model_dir, tiny_model, processor):
    config = AutoConfig.from_pretrained(saved_model_dir)
    assert isinstance(config, LlamaVidConfig) and config.model_type == "llamavid"
    model = AutoModelForImageTextToText.from_pretrained(saved_model_dir).eval()
    assert type(model) is LlamaVidForConditionalGeneration
    loaded_processor = AutoProcessor.from_pretrained(saved_model_dir)
    inputs = loaded_processor(text="USER: <image>\nWho? <image>\nWhat? ASSISTANT:", images=random_images(2),
                              return_tensors="pt")
    with torch.no_grad():
        expected = tiny_model(**inputs).logits
        got = model(**inputs).logits
    assert torch.equal(expected, got)
    base = AutoModel.from_pretrained(saved_model_dir).eval()
    assert type(base) is LlamaVidModel
    with torch.no_grad():
        hidden = base(**inputs).last_hidden_state
    torch.testing.assert_close(tiny_model.lm_head(hidden), expected)
    # the custom parameters survived (v5 re-initialises what it does not load)
    for name in ("model.token_generator.query_tokens", "model.vision_model.embeddings.position_embedding",
                 "model.vision_model.layers.0.attn.q_bias"):
        assert torch.equal(model.get_parameter(name), tiny_model.get_parameter(name)), name


def test_generate_image(tiny_model, processor):
    inputs = image_inputs(processor)
    out = tiny_model.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 6
    assert torch.equal(out, greedy_without_cache(tiny_model, inputs, 6))
    static = tiny_model.generate(**inputs, max_new_tokens=6, do_sample=False, cache_implementation="static")
    assert torch.equal(static, out)


def test_generate_short_video(tiny_model, processor):
    frames = torch.randint(0, 255, (5, 30, 40, 3), dtype=torch.uint8).numpy()
    prompt = render_vicuna_v1([{"role": "user", "content": "<image>\nWhat happens in the video?"}])
    inputs = processor(text=prompt, videos=[frames], return_tensors="pt")
    assert int((inputs["input_ids"] == tiny_model.config.video_token_index).sum()) == 5 * 2
    out = tiny_model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert torch.equal(out, greedy_without_cache(tiny_model, inputs, 5))


def test_generate_long_video(tiny_model, processor):
    torch.manual_seed(3)
    features = torch.randn(9, 4, tiny_model.config.vision_config.hidden_size)  # 9 frames, CLS removed
    prompt = processor.build_movie_prompt("Who opens the door?", subtitles=["She opens the door."] + [""] * 8)
    inputs = processor(text=prompt, video_features=[features], qformer_text=["Who opens the door?"],
                       return_tensors="pt")
    assert int((inputs["input_ids"] == tiny_model.config.video_token_index).sum()) == 9 * 2
    out = tiny_model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert torch.equal(out, greedy_without_cache(tiny_model, inputs, 5))
    static = tiny_model.generate(**inputs, max_new_tokens=5, do_sample=False, cache_implementation="static")
    assert torch.equal(static, out)


def test_long_video_from_frames_equals_its_features(tiny_model, processor):
    """`long_videos=` (frames through the tower) and `video_features=` (the same frames' exported features) agree."""
    frames = torch.randint(0, 255, (6, 30, 40, 3), dtype=torch.uint8).numpy()
    prompt = processor.build_movie_prompt("Who opens the door?", subtitles=["She opens the door."] + [""] * 5)
    from_frames = processor(text=prompt, long_videos=[frames], qformer_text=["Who opens the door?"], return_tensors="pt")
    pixels = processor.image_processor(list(frames), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        features = tiny_model.extract_video_features(pixels)
    from_features = processor(text=prompt, video_features=[features], qformer_text=["Who opens the door?"],
                              return_tensors="pt")
    assert torch.equal(from_frames["input_ids"], from_features["input_ids"])
    assert from_frames["video_features_num_frames"].tolist() == [6]
    with torch.no_grad():
        a = tiny_model(**from_frames).logits
        b = tiny_model(**from_features).logits
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="not both"):
        tiny_model(**from_frames, video_features=features)


def test_context_token_follows_the_question(tiny_model, processor):
    pixels = processor.image_processor(random_images(1), return_tensors="pt")["pixel_values"]
    tokens = {}
    for question in ("Who is the main character?", "What happens in the park at night?"):
        q = processor(text="<image>", images=random_images(1), qformer_text=[question], return_tensors="pt")
        with torch.no_grad():
            tokens[question] = tiny_model.get_image_features(pixels, q["qformer_input_ids"], q["qformer_attention_mask"])
    a, b = tokens.values()
    assert a.shape == (1, 2, tiny_model.config.text_config.hidden_size)
    assert (a[:, 0] - b[:, 0]).abs().max() > 1e-3  # context token: question-dependent
    torch.testing.assert_close(a[:, 1], b[:, 1])  # content token: question-independent
    # and the logits of a prompt change with the Q-Former question only through the visual tokens
    base = image_inputs(processor)
    other = dict(base)
    other.update({k: v for k, v in processor(text="<image>", images=random_images(1), qformer_text=["who is the dog?"],
                                                return_tensors="pt").items() if k.startswith("qformer")})
    with torch.no_grad():
        assert not torch.allclose(tiny_model(**base).logits, tiny_model(**other).logits)


def test_long_video_chunks_and_cls_asymmetry(processor):
    model = make_model(processor, seed=1, visual_chunk_size=64)
    chunked = make_model(processor, seed=1, visual_chunk_size=2)
    frames = random_images(5, seed=7)
    pixels = processor.image_processor(frames, return_tensors="pt")["pixel_values"]
    q = processor(text="<image>", images=frames[:1], qformer_text=["Who opens the door?"], return_tensors="pt")
    ids, mask = q["qformer_input_ids"], q["qformer_attention_mask"]
    with torch.no_grad():
        features = model.extract_video_features(pixels)  # [5, P, C], CLS removed
        long_tokens = model.model.get_long_video_features(features, [5], ids, mask)
        long_chunked = chunked.model.get_long_video_features(features, [5], ids, mask)
        short_tokens = model.model.get_video_features(pixels, [5], ids, mask)
    assert features.shape == (5, 4, model.config.vision_config.hidden_size)
    torch.testing.assert_close(long_tokens, long_chunked, rtol=1e-5, atol=1e-5)
    long_tokens, short_tokens = long_tokens.view(5, 2, -1), short_tokens.view(5, 2, -1)
    # Content tokens pool the same patches; the Q-Former reads 1+P tokens for pixels but only P for features.
    torch.testing.assert_close(long_tokens[:, 1], short_tokens[:, 1], rtol=1e-5, atol=1e-5)
    assert (long_tokens[:, 0] - short_tokens[:, 0]).abs().max() > 1e-4


@pytest.mark.parametrize("compress_type,content", [("grid:2", 4), (None, 4), ("mean_concat", 1)])
def test_compress_types(processor, compress_type, content):
    model = make_model(processor, compress_type=compress_type)
    assert model.config.tokens_per_frame == 1 + content
    pixels = processor.image_processor(random_images(2), return_tensors="pt")["pixel_values"]
    ids = torch.tensor([[2, 30, 3], [2, 31, 3]])
    with torch.no_grad():
        tokens = model.get_image_features(pixels, ids)
    assert tokens.shape == (2, 1 + content, model.config.text_config.hidden_size)


def test_labels_ignore_placeholders(tiny_model, processor):
    inputs = image_inputs(processor)
    labels = inputs["input_ids"].clone()
    masked = labels.masked_fill(labels == tiny_model.config.image_token_index, -100)
    with torch.no_grad():
        loss = tiny_model(**inputs, labels=labels).loss
        expected = tiny_model(**inputs, labels=masked).loss
    assert torch.isfinite(loss) and torch.equal(loss, expected)


def test_batched_left_padded_generation_matches_single(tiny_model, processor):
    prompts = [render_vicuna_v1([{"role": "user", "content": "<image>\n" + q}]) for q in ("Who?", "What happens in the park?")]
    images = random_images(2, seed=11)
    tok = processor.tokenizer
    side = tok.padding_side
    tok.padding_side = "left"
    try:
        batch = processor(text=prompts, images=images, return_tensors="pt")
    finally:
        tok.padding_side = side
    out = tiny_model.generate(**batch, max_new_tokens=4, do_sample=False)
    for index in range(2):
        single = processor(text=prompts[index], images=[images[index]], return_tensors="pt")
        alone = tiny_model.generate(**single, max_new_tokens=4, do_sample=False)
        assert torch.equal(out[index, -4:], alone[0, -4:])


def test_attention_implementations_agree(processor, saved_model_dir):
    inputs = image_inputs(processor, count=2)
    logits = {}
    for impl in ("eager", "sdpa"):
        model = LlamaVidForConditionalGeneration.from_pretrained(saved_model_dir, attn_implementation=impl).eval()
        assert model.config.text_config._attn_implementation == impl
        with torch.no_grad():
            logits[impl] = model(**inputs).logits
    torch.testing.assert_close(logits["eager"], logits["sdpa"], rtol=1e-4, atol=1e-4)


def test_dtype_loading(saved_model_dir, processor):
    model = LlamaVidForConditionalGeneration.from_pretrained(saved_model_dir, dtype=torch.bfloat16).eval()
    assert model.model.vision_model.layers[0].attn.q_bias.dtype == torch.bfloat16
    inputs = image_inputs(processor)
    out = model.generate(**inputs, max_new_tokens=2, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 2


def test_original_rope_precision_option(processor):
    linear = {"rope_parameters": {"rope_type": "linear", "factor": 16.0, "rope_theta": 10000.0}}
    for precision, inv_dtype in (("float16", "bfloat16"), ("float32", "float32")):
        model = make_model(processor, seed=2, original_rope_precision=precision, original_rope_inv_freq_dtype=inv_dtype,
                           text_config=linear)
        text = model.config.text_config
        rope = model.model.language_model.rotary_emb
        positions = torch.arange(0, 9000, 997)[None]
        cos, _ = rope(torch.zeros(1, dtype=torch.float32), positions)
        # transformers 4.31 rebuilt cache: t = arange(dtype) / factor; freqs = t x inv_freq (both in dtype)
        dim = text.hidden_size // text.num_attention_heads
        inv = (1.0 / (10000 ** (torch.arange(0, dim, 2).float() / dim))).to(getattr(torch, inv_dtype))
        inv = inv.to(getattr(torch, precision))
        t = positions[0].to(getattr(torch, precision)) / 16.0
        freqs = torch.einsum("i,j->ij", t, inv)
        expected = torch.cat((freqs, freqs), dim=-1).cos().float()
        torch.testing.assert_close(cos[0], expected)
        if precision == "float16":
            rounded = cos[0]
    exact_cos, _ = make_model(processor, seed=2, text_config=linear).model.language_model.rotary_emb(
        torch.zeros(1), positions)
    assert (exact_cos[0] - cos[0]).abs().max() < 1e-4  # float32 emulation is (nearly) the exact RoPE
    assert (exact_cos[0] - rounded).abs().max() > 0.1  # fp16 positions above 2,048 are rounded: visibly different


def test_input_errors(tiny_model, processor):
    inputs = image_inputs(processor)
    with pytest.raises(ValueError, match="placeholders"):
        tiny_model(input_ids=inputs["input_ids"][:, :-3].clone().fill_(tiny_model.config.image_token_index),
                   pixel_values=inputs["pixel_values"], qformer_input_ids=inputs["qformer_input_ids"])
    features = torch.randn(2, 5, tiny_model.config.vision_config.hidden_size)
    with pytest.raises(ValueError, match="class token"):
        tiny_model.model.get_long_video_features(features, [2], torch.tensor([[2, 3]]))
    with pytest.raises(ValueError, match="question"):
        tiny_model(input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"])
    with pytest.raises(ValueError, match="not both"):
        tiny_model.model.get_visual_tokens(pixel_values_videos=torch.zeros(1, 3, 28, 28), video_features=features[:, 1:],
                                           qformer_input_ids=torch.tensor([[2, 3], [2, 3]]))


def test_generate_from_inputs_embeds_and_device_map(saved_model_dir, tiny_model, processor):
    inputs = image_inputs(processor)
    with torch.no_grad():
        embeds = tiny_model.model.get_input_embeddings()(inputs["input_ids"].masked_fill(
            inputs["input_ids"] >= tiny_model.config.text_config.vocab_size, 0))
        image_tokens, _ = tiny_model.get_visual_tokens(pixel_values=inputs["pixel_values"],
                                                       qformer_input_ids=inputs["qformer_input_ids"],
                                                       qformer_attention_mask=inputs["qformer_attention_mask"])
        embeds[inputs["input_ids"] == tiny_model.config.image_token_index] = image_tokens
    from_ids = tiny_model.generate(**inputs, max_new_tokens=4, do_sample=False)
    from_embeds = tiny_model.generate(inputs_embeds=embeds, attention_mask=inputs["attention_mask"], max_new_tokens=4,
                                      do_sample=False)
    assert torch.equal(from_embeds[0], from_ids[0, -4:])
    mapped = LlamaVidForConditionalGeneration.from_pretrained(saved_model_dir, device_map="auto").eval()
    assert {p.device.type for p in mapped.parameters()} == {"cuda" if torch.cuda.is_available() else "cpu"}
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False  # float32 on a GPU as on the CPU, so greedy tokens can be compared
    try:
        generated = mapped.generate(**inputs.to(mapped.device), max_new_tokens=4, do_sample=False)
    finally:
        torch.backends.cudnn.allow_tf32 = tf32
    assert torch.equal(generated.cpu(), from_ids)


def test_quantized_loading(saved_model_dir, processor):
    bnb = pytest.importorskip("bitsandbytes", reason="bitsandbytes is not installed (it needs a CUDA machine)")
    if not torch.cuda.is_available():
        pytest.skip("bitsandbytes quantization needs a CUDA device")
    from transformers import BitsAndBytesConfig

    del bnb
    model = LlamaVidForConditionalGeneration.from_pretrained(
        saved_model_dir, quantization_config=BitsAndBytesConfig(load_in_4bit=True), device_map="cuda")
    inputs = image_inputs(processor).to("cuda")
    out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 3


def test_sdpa_backend_option_validated():
    with pytest.raises(ValueError, match="sdpa_backends"):
        LlamaVidConfig(sdpa_backends=["fast"])
    assert LlamaVidConfig(sdpa_backends=["cudnn", "flash"]).sdpa_backends == ["cudnn", "flash"]


def test_mixed_batch_of_image_and_video(tiny_model, processor):
    frames = torch.randint(0, 255, (3, 30, 40, 3), dtype=torch.uint8).numpy()
    image = random_images(1, seed=21)
    prompts = ["USER: <image>\nWho is the main character? ASSISTANT:", "USER: <video>\nWhat happens? ASSISTANT:"]
    batch = processor(text=prompts, images=image, videos=[frames], return_tensors="pt")
    # questions: the image's first, then the video's
    questions = processor.qformer_tokenizer.batch_decode(batch["qformer_input_ids"], skip_special_tokens=True)
    assert questions == ["who is the main character?", "what happens?"]
    with torch.no_grad():
        logits = tiny_model(**batch).logits
        alone_image = tiny_model(**processor(text=prompts[0], images=image, return_tensors="pt")).logits
        alone_video = tiny_model(**processor(text=prompts[1].replace("<video>", "<image>"), videos=[frames],
                                             return_tensors="pt")).logits
    torch.testing.assert_close(logits[0, : alone_image.shape[1]], alone_image[0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(logits[1, : alone_video.shape[1]], alone_video[0], rtol=1e-4, atol=1e-4)
