"""Speed options of LlamaVidForConditionalGeneration on CPU: `fast_attention` (implicit causal masks under torch.compile,
one-kernel static-cache decoding masks), `fused_gelu` and `compile_blocks` (EVA tower, whole decoder). Compiled paths
use torch.compile's "eager" backend here: dynamo traces what inductor would compile on a GPU, the ops then run eagerly
on the CPU."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from transformers import CompileConfig

from moviellm_model import LlamaVidConfig, LlamaVidForConditionalGeneration
from moviellm_model import fast_attention as fa
from moviellm_model import fast_paths
from moviellm_model.fast_attention import fast_attention_mask

from .conftest import make_model


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


def test_compiled_static_decoding_matches_reference(monkeypatch, tiny_model, processor):
    built = []
    fast = make_model(processor, seed=0, fast_attention=True)  # the same weights as tiny_model
    original = fast_paths.static_decoding_mask
    monkeypatch.setattr(fast_paths, "static_decoding_mask", lambda *a: built.append(1) or original(*a))
    ids = torch.randint(3, tiny_model.config.text_config.vocab_size, (2, 40))
    mask = torch.ones_like(ids)
    mask[1, :6] = 0  # left padding
    settings = dict(input_ids=ids, attention_mask=mask, max_new_tokens=5, do_sample=False,
                    return_dict_in_generate=True, output_logits=True)
    with torch.no_grad():
        reference = tiny_model.generate(**settings)
        compile_config = CompileConfig(backend="eager", fullgraph=True, mode=None)
        compile_config._compile_all_devices = True  # transformers compiles the decoding step on GPUs only
        got = fast.generate(**settings, cache_implementation="static", compile_config=compile_config)
    assert len(built) >= 4  # one mask per decoding step, from the padding mask
    assert torch.equal(got.sequences, reference.sequences)
    for a, b in zip(got.logits, reference.logits):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_static_decoding_mask_equals_transformers_mask(processor):
    from transformers import StaticCache
    from transformers.masking_utils import create_masks_for_generate

    model = make_model(processor, seed=1, fast_attention=True)
    text = model.config.text_config
    ids = torch.randint(3, text.vocab_size, (2, 9))
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[0, :3] = 0
    cache = StaticCache(config=text, max_cache_len=16)
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask[:, :9], **{cache_argument(): cache})
    step = dict(inputs_embeds=torch.empty(2, 1, 0), attention_mask=mask, position_ids=torch.full((2, 1), 9))
    step[cache_argument()] = cache
    ours = model.create_masks_for_generate(config=model.config, **step)
    expected = create_masks_for_generate(config=model.config, **step)
    assert ours.shape == expected.shape == (2, 1, 1, 16) and ours.dtype == expected.dtype == torch.bool
    assert torch.equal(ours, expected)
    model.set_fast_attention(False)  # the option off: transformers' construction
    assert torch.equal(model.create_masks_for_generate(config=model.config, **step), expected)


def cache_argument() -> str:
    """The cache keyword of the installed transformers ("past_key_values", renamed "cache" in 5.2x)."""
    import inspect

    from transformers.masking_utils import create_masks_for_generate

    return "cache" if "cache" in inspect.signature(create_masks_for_generate).parameters else "past_key_values"


def test_fused_gelu_and_compiled_tower(processor):
    reference = make_model(processor, seed=2)
    fused = make_model(processor, seed=2)
    fused.config.vision_config.fused_gelu = True
    fused.compile_blocks(vision=True, language_model=False, backend="eager")
    pixels = torch.randn(3, 3, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(fused.model.vision_model(pixels), reference.model.vision_model(pixels),
                                   rtol=1e-5, atol=1e-5)  # exact GELU on CPU
    assert fused.model.vision_model._compiled_call_impl is not None
    fused.uncompile_blocks()
    assert fused.model.vision_model._compiled_call_impl is None
    with pytest.raises(ValueError, match="fused_gelu"):
        LlamaVidConfig(vision_config=dict(hidden_act="gelu_pytorch_tanh", fused_gelu=True))


def test_fused_residual_norm_tower(monkeypatch, processor):
    reference = make_model(processor, seed=3)
    fused = make_model(processor, seed=3)
    fused.config.vision_config.fused_residual_norm = True
    for layer in (*reference.model.vision_model.layers, *fused.model.vision_model.layers):
        # non-trivial norms and biases, so that a branch or bias added twice, or left out, shows
        torch.manual_seed(4)
        with torch.no_grad():
            for module in (layer.norm1, layer.norm2, layer.attn.proj, layer.mlp.fc2):
                module.bias.normal_(0, 0.5)
    pixels = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        expected = reference.model.vision_model(pixels)
        torch.testing.assert_close(fused.model.vision_model(pixels), expected, rtol=1e-5, atol=1e-5)
    import moviellm_model.modeling_llamavid as modeling

    calls = []
    original = modeling.add_layer_norm_
    monkeypatch.setattr(modeling, "add_layer_norm_", lambda *args: calls.append(1) or original(*args))
    # with a trainable tower and autograd on, the in-place path is not taken and gradients flow as usual
    features = fused.model.vision_model(pixels)
    features.sum().backward()
    assert not calls and fused.model.vision_model.layers[0].attn.qkv.weight.grad is not None
    torch.testing.assert_close(features.detach(), expected, rtol=1e-5, atol=1e-5)
    # a frozen tower records no graph, so it takes the fused path even with grad enabled
    fused.model.vision_model.requires_grad_(False)
    torch.testing.assert_close(fused.model.vision_model(pixels), expected, rtol=1e-5, atol=1e-5)
    assert len(calls) == 2 * len(fused.model.vision_model.layers)


def test_add_layer_norm_matches_unfused():
    from moviellm_model.vision_kernels import add_layer_norm_

    norm = torch.nn.LayerNorm(24, eps=1e-6)
    with torch.no_grad():
        norm.weight.normal_(1, 0.1)
        norm.bias.normal_(0, 0.1)
    stream, branch = torch.randn(5, 24), torch.randn(5, 24)
    expected_stream = stream + branch
    with torch.no_grad():
        out = add_layer_norm_(stream, branch, norm)
        torch.testing.assert_close(stream, expected_stream)  # updated in place
        torch.testing.assert_close(out, norm(expected_stream))
        torch.testing.assert_close(add_layer_norm_(stream.clone(), None, norm), norm(stream))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the fused kernel (Triton) runs on CUDA")
def test_fused_residual_norm_kernel_on_cuda(processor):
    from moviellm_model.vision_kernels import add_layer_norm_

    # the kernel against the unfused ops, at an EVA-like width (not a power of two) and in bf16
    norm = torch.nn.LayerNorm(1408, eps=1e-6).cuda().to(torch.bfloat16)
    with torch.no_grad():
        norm.weight.normal_(1, 0.1)
        norm.bias.normal_(0, 0.1)
        stream = torch.randn(513, 1408, device="cuda", dtype=torch.bfloat16) * 3
        branch = torch.randn_like(stream)
        expected_stream = stream + branch
        out = add_layer_norm_(stream, branch, norm)
        assert torch.equal(stream, expected_stream)  # the same single rounding of the sum
        torch.testing.assert_close(out, norm(expected_stream), rtol=1.6e-2, atol=1.6e-2)  # one bf16 step at most

    # the whole tower, eager and compiled, against the unfused blocks (float32: only reduction order differs; TF32
    # convolutions off, since eager and inductor may pick different TF32 algorithms for the patch embedding)
    reference = make_model(processor, seed=6).cuda()
    fused = make_model(processor, seed=6).cuda()
    fused.config.vision_config.fused_residual_norm = True
    pixels = torch.randn(3, 3, 28, 28, device="cuda")
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        with torch.no_grad():
            expected = reference.model.vision_model(pixels)
            torch.testing.assert_close(fused.model.vision_model(pixels), expected, rtol=1e-5, atol=1e-5)
            fused.compile_blocks(vision=True, language_model=False)
            torch.testing.assert_close(fused.model.vision_model(pixels), expected, rtol=1e-5, atol=1e-5)
    finally:
        torch.backends.cudnn.allow_tf32 = tf32
        fused.uncompile_blocks()


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
        # generate with a static cache: its prompt runs eagerly (transformers keeps the causal mask implicit only
        # there), the single-token steps through the compiled decoder into the eagerly allocated cache
        calls.clear()
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=4, do_sample=False,
                             cache_implementation="static", disable_compile=True)
        assert calls[0] == (30, True, True) and all(q == 1 for q, _, _ in calls[2:])
        assert torch.equal(out, reference.generate(input_ids=ids, attention_mask=mask, max_new_tokens=4,
                                                   do_sample=False))
    model.uncompile_blocks()
    assert model.model.language_model._compiled_call_impl is None


class EmulatedGraph:
    """Stands in for a CUDA graph on the CPU: capture runs the step once, replay reruns it into the captured outputs."""

    def __init__(self):
        self.step = self.output = None

    def capture(self, step):
        self.step = step
        self.output = step()
        return self.output

    def replay(self):
        self.output.logits.copy_(self.step().logits)


def test_cuda_graph_decoder_replays_static_steps(processor, tiny_model):
    from moviellm_model.cuda_graph_decoding import CudaGraphDecoder

    model = make_model(processor, seed=0, fast_attention=True, cuda_graph_decoding=True)
    assert not isinstance(model.get_compiled_call(None), CudaGraphDecoder)  # CPU: transformers' compiled call
    decoder = CudaGraphDecoder(torch.compile(model.__call__, backend="eager", fullgraph=True), model.lm_head.weight,
                               graph_factory=EmulatedGraph)
    model.get_compiled_call = lambda compile_config: decoder
    ids = torch.randint(3, model.config.text_config.vocab_size, (2, 33))
    mask = torch.ones_like(ids)
    mask[0, :5] = 0
    settings = dict(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False,
                    return_dict_in_generate=True, output_logits=True)
    compile_config = CompileConfig(backend="eager")
    compile_config._compile_all_devices = True
    with torch.no_grad():
        reference = tiny_model.generate(**settings)
        for captures in (1, 2):  # a new generate call brings a new cache: one capture each
            got = model.generate(**settings, cache_implementation="static", compile_config=compile_config)
            assert decoder.captures == captures
            assert torch.equal(got.sequences, reference.sequences)
            for a, b in zip(got.logits, reference.logits):
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
        # steps that are not single-token static-cache steps run the compiled forward directly
        assert decoder(input_ids=ids, attention_mask=mask).logits.shape[:2] == (2, 33)
        assert decoder.captures == 2


def test_compiled_decoder_with_compiled_static_generate(processor, tiny_model):
    # the class docstring's recipe: compiled decoder for prompts, compiled decoding steps over a static cache
    model = make_model(processor, seed=0)
    model.compile_blocks(vision=False, backend="eager")
    compile_config = CompileConfig(backend="eager", fullgraph=True, mode=None)
    compile_config._compile_all_devices = True
    ids = torch.randint(3, model.config.text_config.vocab_size, (1, 30))
    with torch.no_grad():
        got = model.generate(input_ids=ids, max_new_tokens=5, do_sample=False, cache_implementation="static",
                             compile_config=compile_config)
        assert torch.equal(got, tiny_model.generate(input_ids=ids, max_new_tokens=5, do_sample=False))
