"""Style immobilization: textual inversion of the style keyword, its file, its cache."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from moviellm_data.errors import MovieLLMError
from moviellm_data.renderers.reference import reference_keyframe
from moviellm_data.renderers.style import (
    StyleCache,
    read_style_embedding,
    style_embedding_info,
    style_token,
    token_names,
)


def _embedding_rows(pipe):
    """Both encoders' token embedding tables, copied to the CPU (where the learned file's tensors are)."""
    return [pipe.text_encoder.get_input_embeddings().weight.detach().cpu().clone(),
            pipe.text_encoder_2.get_input_embeddings().weight.detach().cpu().clone()]


def test_only_the_new_token_learns_and_the_file_loads_with_diffusers(make_renderer, tiny_script, tiny_sdxl):
    from diffusers import AutoPipelineForImage2Image, AutoPipelineForText2Image
    from safetensors import safe_open

    renderer = make_renderer(preset="reference")
    renderer.load()
    before = _embedding_rows(renderer.pipeline)
    token = style_token(tiny_script.style.keyword)
    data = renderer.style_embedding(tiny_script)
    after = _embedding_rows(renderer.pipeline)
    pipe = renderer.pipeline

    # Every existing row is bit-identical; exactly one row per encoder was added, holding the learned vector.
    learned = read_style_embedding(data)
    for old, new, key, tokenizer in zip(before, after, ("clip_l", "clip_g"), (pipe.tokenizer, pipe.tokenizer_2)):
        assert new.shape[0] == old.shape[0] + 1
        assert torch.equal(new[: old.shape[0]], old)
        token_id = tokenizer.convert_tokens_to_ids(token)
        assert token_id == old.shape[0]
        assert torch.allclose(new[token_id].float(), learned[key][0])
    assert learned["clip_l"].shape == (1, pipe.text_encoder.config.hidden_size)
    assert learned["clip_g"].shape == (1, pipe.text_encoder_2.config.hidden_size)
    # It moved away from its starting point (the keyword's own embedding).
    keyword_ids = pipe.tokenizer(tiny_script.style.keyword.lower(), add_special_tokens=False).input_ids
    start = before[0][torch.tensor(keyword_ids)].float().mean(0)
    assert not torch.allclose(learned["clip_l"][0], start)

    path = renderer.style_cache.path(renderer.style_key(tiny_script.style))
    assert path.read_bytes() == data
    with safe_open(str(path), framework="pt") as fh:
        assert json.loads(fh.metadata()["moviellm_style"])["token"] == token
    assert style_embedding_info(data) == {"format": "moviellm-style-embedding-v1", "token": token,
                                          "keyword": tiny_script.style.keyword}

    # A fresh pipeline loaded from disk: the token changes its output once the file is loaded as the
    # platform notes prescribe, and then it renders what our renderer renders.
    base_dir, refiner_dir = tiny_sdxl
    fresh = AutoPipelineForText2Image.from_pretrained(str(base_dir))
    refiner = AutoPipelineForImage2Image.from_pretrained(str(refiner_dir), text_encoder_2=fresh.text_encoder_2,
                                                         tokenizer_2=fresh.tokenizer_2, vae=fresh.vae)
    for p in (fresh, refiner):
        p.set_progress_bar_config(disable=True)
    prompt = f"generate an image in {token} style: a harbour at dusk"
    settings = dict(negative_prompt=renderer.settings.negative_prompt, seed=5, steps=2, width=64, height=64)
    without = reference_keyframe(fresh, refiner, prompt, **settings)
    state = read_style_embedding(path.read_bytes())
    fresh.load_textual_inversion(state["clip_l"], token=token, text_encoder=fresh.text_encoder, tokenizer=fresh.tokenizer)
    fresh.load_textual_inversion(state["clip_g"], token=token, text_encoder=fresh.text_encoder_2, tokenizer=fresh.tokenizer_2)
    with_style = reference_keyframe(fresh, refiner, prompt, **settings)
    assert np.abs(with_style.astype(int) - without.astype(int)).mean() > 1.0
    ours = renderer.render_prompts([prompt], [5])[0]
    assert np.abs(ours.astype(int) - with_style.astype(int)).max() <= 1


def test_cache_reuses_training_and_learning_is_deterministic(make_renderer, tiny_script, tmp_path):
    first = make_renderer(style_cache=tmp_path / "one")
    data = first.style_embedding(tiny_script)
    assert "style_training_s" in first.timings
    # Same cache: nothing is learned again and the bytes are the same.
    again = make_renderer(style_cache=tmp_path / "one")
    assert again.style_embedding(tiny_script) == data
    assert "style_training_s" not in again.timings
    # Provenance records the hash of exactly the shipped bytes.
    assert again.provenance(tiny_script).style_embedding_sha256 == hashlib.sha256(data).hexdigest()
    # An empty cache learns it again, identically (seeded, on CPU).
    fresh = make_renderer(style_cache=tmp_path / "two")
    assert fresh.style_embedding(tiny_script) == data
    assert "style_training_s" in fresh.timings
    # Another style is another embedding under another key.
    other = tiny_script.style.model_copy(update={"phrases": ["neon", "rain"], "emphasised": []})
    assert fresh.style_key(other) != fresh.style_key(tiny_script.style)


def test_a_corrupt_cached_file_is_learned_again(make_renderer, tiny_script, tmp_path):
    renderer = make_renderer(style_cache=tmp_path / "cache")
    path = renderer.style_cache.path(renderer.style_key(tiny_script.style))
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not safetensors")
    data = renderer.style_embedding(tiny_script)
    assert "style_training_s" in renderer.timings
    assert path.read_bytes() == data
    read_style_embedding(data)
    with pytest.raises(MovieLLMError, match="not a safetensors file"):
        read_style_embedding(b"junk")
    assert StyleCache(tmp_path / "cache").get(renderer.style_key(tiny_script.style)) == data


def test_training_follows_the_schedule_with_flips(make_renderer):
    from moviellm_data.renderers.presets import StyleTraining
    from moviellm_data.renderers.style import _latents_of, train_style_embedding

    renderer = make_renderer(preset="reference")
    pipe = renderer.pipeline
    images = [np.full((64, 64, 3), 40 * i, dtype=np.uint8) for i in range(3)]
    assert _latents_of(pipe, images, True, torch.Generator().manual_seed(0)).shape[0] == 6
    assert _latents_of(pipe, images, False, torch.Generator().manual_seed(0)).shape[0] == 3
    calls = []
    config = StyleTraining(images=3, schedule=((2, 1e-3), (1, 3e-4)), num_vectors=2)
    learned = train_style_embedding(pipe, images, "Noir", "<noir-style>", config, seed=1,
                                    progress=lambda step, total, loss: calls.append((step, total, loss)))
    assert [c[:2] for c in calls] == [(1, 3), (2, 3), (3, 3)]
    assert all(np.isfinite(c[2]) and c[2] > 0 for c in calls)
    assert learned["clip_l"].shape == (2, 32) and learned["clip_g"].shape == (2, 48)
    # A multi-vector token is registered under diffusers' names and installed.
    names = token_names("<noir-style>", 2)
    ids = pipe.tokenizer.convert_tokens_to_ids(names)
    weight = pipe.text_encoder.get_input_embeddings().weight.detach().cpu()
    assert torch.allclose(weight[torch.tensor(ids)].float(), learned["clip_l"])
