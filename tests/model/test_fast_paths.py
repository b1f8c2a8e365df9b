"""Speed options of LlamaVidForConditionalGeneration on CPU: `fast_attention` (split-KV decoding, implicit causal masks
under torch.compile) and `compile_blocks` (EVA blocks, whole decoder). Compiled paths use torch.compile's "eager"
backend here: dynamo traces exactly what inductor would compile on a GPU, the ops then run eagerly on the CPU."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from transformers import CompileConfig

from moviellm_model import LlamaVidConfig, LlamaVidForConditionalGeneration
from moviellm_model import fast_attention as fa
from moviellm_model.fast_attention import decode_attention, fast_attention_mask

from .conftest import make_model


def sdpa_reference(query, key, value, mask, scale):
    groups = query.shape[1] // key.shape[1]
    key, value = key.repeat_interleave(groups, 1), value.repeat_interleave(groups, 1)
    return F.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scale).transpose(1, 2)


@pytest.mark.parametrize("groups", [1, 4])
@pytest.mark.parametrize("mask_kind", ["none", "bool", "float"])
def test_decode_attention_matches_sdpa(groups, mask_kind):
    torch.manual_seed(groups)
    batch, kv_heads, length, dim = 2, 2, 53, 16
    query = torch.randn(batch, kv_heads * groups, 1, dim)
    key, value = torch.randn(batch, kv_heads, length, dim), torch.randn(batch, kv_heads, length, dim)
    mask = None
    if mask_kind != "none":
        mask = torch.rand(batch, 1, 1, length) > 0.4
        mask[..., 0] = True
        if mask_kind == "float":
            mask = torch.where(mask, 0.0, torch.finfo(torch.float32).min)
    expected = sdpa_reference(query, key, value, mask, 0.37)
    got = decode_attention(query, key, value, mask, 0.37)
    assert got.shape == (batch, 1, kv_heads * groups, dim)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # bf16 inputs: float32 softmax, result rounded once
    got16 = decode_attention(query.bfloat16(), key.bfloat16(), value.bfloat16(), mask, 0.37)
    assert got16.dtype == torch.bfloat16
    assert float((got16.float() - expected).norm() / expected.norm()) < 1e-2


def test_mask_function_keeps_plain_causal_implicit():
    # no padding: SDPA's is_causal (prompt) or no mask at all (one query over a dynamic cache)
    assert fast_attention_mask(batch_size=1, q_length=7, kv_length=7, device="cpu") is None
    assert fast_attention_mask(batch_size=1, q_length=1, kv_length=9, q_offset=8, device="cpu") is None
    # static-cache decoding (transformers disables the skip) and padding still get the usual boolean mask
    mask = fast_attention_mask(batch_size=1, q_length=1, kv_length=9, q_offset=4, allow_is_causal_skip=False,
                               device="cpu")
    assert mask.dtype == torch.bool and mask.shape == (1, 1, 1, 9) and mask[0, 0, 0, :5].all() and not mask[..., 5:].any()
    padded = fast_attention_mask(batch_size=1, q_length=4, kv_length=4, attention_mask=torch.tensor([[0, 1, 1, 1]]).bool(),
                                 device="cpu")
    assert padded.shape == (1, 1, 4, 4) and not padded[0, 0, :, 0].any() and padded[0, 0, 3, 1:].all()


def test_fast_attention_option_survives_save_and_load(tmp_path, processor):
    model = make_model(processor, seed=5, fast_attention=True)
    assert model.model.language_model.config._attn_implementation == fa.FAST_ATTENTION
    model.save_pretrained(tmp_path)
    saved = (tmp_path / "config.json").read_text()
    assert json.loads(saved)["fast_attention"] is True and fa.FAST_ATTENTION not in saved  # the option, not the name
    loaded = LlamaVidForConditionalGeneration.from_pretrained(tmp_path)
    assert loaded.model.language_model.config._attn_implementation == fa.FAST_ATTENTION
    eager = LlamaVidForConditionalGeneration.from_pretrained(tmp_path, attn_implementation="eager")
    assert eager.model.language_model.config._attn_implementation == "eager"  # an explicit choice wins
    loaded.set_fast_attention(False)
    assert loaded.model.language_model.config._attn_implementation == "sdpa" and not loaded.config.fast_attention
    assert LlamaVidConfig().fast_attention is False


def test_fast_attention_is_exact_without_compile(tiny_model, processor):
    ids = torch.randint(3, tiny_model.config.text_config.vocab_size, (2, 21))
    padding = torch.ones_like(ids)
    padding[1, :4] = 0
    fast = make_model(processor, seed=0, fast_attention=True)  # the same weights as tiny_model
    with torch.no_grad():
        for mask in (torch.ones_like(ids), padding):
            assert torch.equal(fast(input_ids=ids, attention_mask=mask).logits,
                               tiny_model(input_ids=ids, attention_mask=mask).logits)


def test_compiled_static_decoding_uses_split_kv(monkeypatch, tiny_model, processor):
    traced = []
    monkeypatch.setattr(fa, "decode_attention", lambda *a, **k: traced.append(a[1].shape) or decode_attention(*a, **k))
    ids = torch.randint(3, tiny_model.config.text_config.vocab_size, (1, 40))
    settings = dict(input_ids=ids, max_new_tokens=5, do_sample=False, return_dict_in_generate=True, output_logits=True)
    with torch.no_grad():
        reference = tiny_model.generate(**settings)
        fast = make_model(processor, seed=0, fast_attention=True)
        compile_config = CompileConfig(backend="eager", fullgraph=True, mode=None)
        compile_config._compile_all_devices = True  # transformers compiles the decoding step on GPUs only
        got = fast.generate(**settings, cache_implementation="static", compile_config=compile_config)
    assert traced and all(shape[2] >= 40 + 4 for shape in traced)  # the whole static cache, one query per step
    assert torch.equal(got.sequences, reference.sequences)
    for a, b in zip(got.logits, reference.logits):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_compiled_decoder_prefill_keeps_causal_kernel(monkeypatch, processor):
    model = make_model(processor, seed=0, fast_attention=True)
    reference = make_model(processor, seed=0)
    calls = []
    original = F.scaled_dot_product_attention

    def spy(query, key, value, attn_mask=None, *args, **kwargs):
        calls.append((query.shape[2], attn_mask is None, kwargs.get("is_causal")))
        return original(query, key, value, attn_mask, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    torch._dynamo.reset()
    model.compile_blocks(vision=False, language_model=True, backend="eager")
    ids = torch.randint(3, model.config.text_config.vocab_size, (1, 30))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        expected = reference(input_ids=ids, attention_mask=mask).logits
        calls.clear()
        got = model(input_ids=ids, attention_mask=mask).logits
        assert calls and all(no_mask and causal for _, no_mask, causal in calls)  # traced: flash/cuDNN-eligible
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
        # generate with a static cache through the compiled decoder: the cache is allocated eagerly first
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=4, do_sample=False,
                             cache_implementation="static", disable_compile=True)
        assert torch.equal(out, reference.generate(input_ids=ids, attention_mask=mask, max_new_tokens=4,
                                                   do_sample=False))
    model.uncompile_blocks()
    assert model.model.language_model._compiled_call_impl is None
