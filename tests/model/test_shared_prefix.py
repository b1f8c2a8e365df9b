"""moviellm_model.shared_prefix: the prefix held once, attention split exactly between the prefix and each row's tail;
`generate` over it equals `generate` over a cache holding a copy of the prefix in every row (greedy and beam search)."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache

from moviellm_model.inference import GenerationSettings, answer_questions, encode_features
from moviellm_model.inference.answering import _cache_kwarg, _layer_states, _output_cache
from moviellm_model.shared_prefix import (
    PrefixedStates,
    SharedPrefixCache,
    attend_to_prefix,
    shared_prefix_attention,
    shared_prefix_attention_forward,
)

from .test_inference import QUESTIONS, movie


class _Module:
    """What the attention function reads of a transformers attention module."""

    def __init__(self, groups: int):
        self.num_key_value_groups = groups
        self.is_causal = True
        self.training = False


def _reference(query, prefix_k, prefix_v, own_k, own_v, own_mask):
    """Softmax attention over [prefix | own tail] with the prefix copied into every row (float64)."""
    rows, heads = query.shape[:2]
    groups = heads // prefix_k.shape[1]
    keys = torch.cat([prefix_k.expand(rows, -1, -1, -1), own_k], dim=2).repeat_interleave(groups, dim=1).double()
    values = torch.cat([prefix_v.expand(rows, -1, -1, -1), own_v], dim=2).repeat_interleave(groups, dim=1).double()
    visible = torch.cat([torch.ones(*own_mask.shape[:-1], prefix_k.shape[2], dtype=torch.bool), own_mask], dim=-1)
    scores = query.double() @ keys.transpose(-1, -2) / query.shape[-1] ** 0.5
    scores = scores.masked_fill(~visible, float("-inf"))
    return (torch.softmax(scores, dim=-1) @ values).transpose(1, 2)


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("mask_kind", ["bool", "additive"])
def test_split_attention_equals_attention_over_copied_prefixes(groups, mask_kind):
    torch.manual_seed(0)
    rows, kv_heads, length, tail, prefix, dim = 3, 2, 4, 7, 19, 8
    heads = kv_heads * groups
    query = torch.randn(rows, heads, length, dim)
    prefix_k, prefix_v = torch.randn(1, kv_heads, prefix, dim), torch.randn(1, kv_heads, prefix, dim)
    own_k, own_v = torch.randn(rows, kv_heads, tail, dim), torch.randn(rows, kv_heads, tail, dim)
    # causal within the tail, row 1 with two padded tail positions, the last two slots never written
    own_mask = torch.ones(length, tail, dtype=torch.bool).tril(diagonal=tail - length - 2).expand(rows, 1, -1, -1)
    own_mask = own_mask.clone()
    own_mask[1, :, :, :2] = False
    full_mask = torch.cat([torch.ones(rows, 1, length, prefix, dtype=torch.bool), own_mask], dim=-1)
    if mask_kind == "additive":
        full_mask = torch.zeros(full_mask.shape).masked_fill(~full_mask, torch.finfo(torch.float32).min)
    got, weights = shared_prefix_attention_forward(_Module(groups), query, PrefixedStates(prefix_k, own_k),
                                                   PrefixedStates(prefix_v, own_v), full_mask)
    expected = _reference(query, prefix_k, prefix_v, own_k, own_v, own_mask)
    assert weights is None and got.shape == (rows, length, heads, dim)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)


def test_a_query_that_sees_none_of_its_tail_attends_to_the_prefix_only():
    torch.manual_seed(1)
    query, prefix_k, prefix_v = torch.randn(1, 2, 1, 4), torch.randn(1, 2, 5, 4), torch.randn(1, 2, 5, 4)
    own = torch.randn(1, 2, 3, 4)
    mask = torch.cat([torch.ones(1, 1, 1, 5, dtype=torch.bool), torch.zeros(1, 1, 1, 3, dtype=torch.bool)], dim=-1)
    got, _ = shared_prefix_attention_forward(_Module(1), query, PrefixedStates(prefix_k, own),
                                             PrefixedStates(prefix_v, own), mask)
    expected = torch.nn.functional.scaled_dot_product_attention(query, prefix_k, prefix_v).transpose(1, 2)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_the_prefix_kernels_return_the_log_sum_exp():
    torch.manual_seed(2)
    query, keys, values = torch.randn(1, 2, 3, 8), torch.randn(1, 2, 11, 8), torch.randn(1, 2, 11, 8)
    output, lse = attend_to_prefix(query, keys, values, scale=8**-0.5, kernel="math")
    scores = query @ keys.transpose(-1, -2) * 8**-0.5
    torch.testing.assert_close(lse, torch.logsumexp(scores, dim=-1))
    torch.testing.assert_close(output, torch.softmax(scores, dim=-1) @ values)
    with pytest.raises(ValueError, match="prefix kernel must be one of"):
        attend_to_prefix(query, keys, values, scale=1.0, kernel="fastest")


def test_plain_tensors_go_to_sdpa():
    torch.manual_seed(3)
    query, keys, values = torch.randn(2, 2, 3, 4), torch.randn(2, 2, 3, 4), torch.randn(2, 2, 3, 4)
    got, _ = shared_prefix_attention_forward(_Module(1), query, keys, values, None)
    expected = torch.nn.functional.scaled_dot_product_attention(query, keys, values, is_causal=True).transpose(1, 2)
    torch.testing.assert_close(got, expected)


def _prefilled(model, length: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 200, (1, length), generator=generator)
    output = model(input_ids=ids, use_cache=True, logits_to_keep=1)
    return ids, _layer_states(_output_cache(output))


@pytest.mark.parametrize(("beams", "align"), [(1, 256), (2, 256), (1, 8)])
def test_generate_over_a_shared_prefix_equals_generate_over_copies(tiny_model, beams, align):
    """Rows `prefix | padding | suffix` of different lengths, as `answer_questions` builds them; with `align` 8 the
    23-token prefix is split into 16 shared tokens and 7 copied into every row's tail."""
    torch.manual_seed(4)
    prefix_ids, states = _prefilled(tiny_model, 23, seed=4)
    suffixes = [[5, 9, 13, 17], [21, 25], [29, 31, 37]]
    width = max(len(s) for s in suffixes)
    ids = torch.tensor([prefix_ids[0].tolist() + [0] * (width - len(s)) + s for s in suffixes])
    mask = torch.tensor([[1] * 23 + [0] * (width - len(s)) + [1] * len(s) for s in suffixes])
    kwargs = dict(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False, num_beams=beams,
                  pad_token_id=0, eos_token_id=None)
    reference_cache = DynamicCache()  # the prefix copied into every row
    for index, (keys, values) in enumerate(states):
        reference_cache.update(keys.expand(3 * beams, -1, -1, -1).contiguous(),
                               values.expand(3 * beams, -1, -1, -1).contiguous(), index)
    expected = tiny_model.generate(**{_cache_kwarg(): reference_cache}, **kwargs)

    prefix_before = [keys.clone() for keys, _ in states]
    tail = SharedPrefixCache.tail_length_for(23, width + 6, align)
    cache = SharedPrefixCache(states, rows=3 * beams, tail_length=tail, align=align)
    with shared_prefix_attention(tiny_model):
        got = tiny_model.generate(**{_cache_kwarg(): cache}, **kwargs)
    assert tiny_model.model.language_model.config._attn_implementation != "llamavid_shared_prefix", "restored"
    assert torch.equal(got, expected)
    layer = cache.layers[0]
    shared = 23 if align == 256 else 16
    assert tail == (256 if align == 256 else 24) and layer.prefix_keys.shape[2] == shared
    assert layer.keys.shape[:3] == (3 * beams, states[0][0].shape[1], tail), "each row holds only its own tail"
    assert all(layer.prefix_keys.data_ptr() == keys.data_ptr() for layer, (keys, _) in zip(cache.layers, states)), \
        "the shared part is the prefill's own tensor, not a copy"
    assert all(torch.equal(before, keys) for before, (keys, _) in zip(prefix_before, states)), "nor written"
    assert int(layer.cumulative_length) == 23 + width + 6 - 1  # the last generated token is never fed back


def test_answer_questions_holds_the_movie_once(tiny_model, processor, monkeypatch):
    feats, inputs = movie(tiny_model, frames=40)
    video = encode_features(tiny_model, feats, inputs=inputs)
    caches = []
    original = SharedPrefixCache.__init__

    def spy(self, prefix_states, rows, tail_length, align=256):
        original(self, prefix_states, rows, tail_length, align)
        caches.append(self)

    monkeypatch.setattr(SharedPrefixCache, "__init__", spy)
    answers = answer_questions(tiny_model, processor, video, QUESTIONS, GenerationSettings(max_new_tokens=4),
                               qformer_query="moviellm", batch_size=3)
    assert len(answers) == 3 and len(caches) == 1
    layer = caches[0].layers[0]
    prefix = layer.prefix_keys.shape[2]
    assert prefix > video.num_frames * tiny_model.config.tokens_per_frame, "the visual tokens are in the prefix"
    assert layer.prefix_keys.shape[0] == 1 and layer.keys.shape[0] == 3, "one movie for three rows of questions"


def test_compiled_graph_replayed_decoding_over_a_shared_prefix(processor, tiny_model):
    """The decoding step compiled in one graph (fullgraph) and replayed per cache, as on a GPU with
    `cuda_graph_decoding` (the graph emulated on the CPU): the same answers, one capture per movie, and a second movie
    of the same length compiles nothing new."""
    from torch._dynamo.utils import counters
    from transformers import CompileConfig

    from moviellm_model.cuda_graph_decoding import CudaGraphDecoder

    from .conftest import make_model
    from .test_fast_paths import EmulatedGraph

    model = make_model(processor, seed=0, fast_attention=True, cuda_graph_decoding=True)  # tiny_model's weights
    decoder = CudaGraphDecoder(torch.compile(model.__call__, backend="eager", fullgraph=True), model.lm_head.weight,
                               graph_factory=EmulatedGraph)
    model.get_compiled_call = lambda compile_config: decoder
    compile_config = CompileConfig(backend="eager", fullgraph=True)
    compile_config._compile_all_devices = True  # transformers compiles the decoding step on GPUs only
    model.generation_config.compile_config = compile_config
    settings = GenerationSettings(max_new_tokens=5)
    torch._dynamo.reset()
    compiled = []
    for seed in (0, 1):
        feats, inputs = movie(tiny_model, frames=40, seed=seed)
        expected = answer_questions(tiny_model, processor, encode_features(tiny_model, feats, inputs=inputs),
                                    QUESTIONS, settings, qformer_query="moviellm", cache_implementation="static")
        with torch.no_grad():
            got = answer_questions(model, processor, encode_features(model, feats, inputs=inputs), QUESTIONS,
                                   settings, qformer_query="moviellm")
        assert got == expected
        compiled.append(counters["stats"]["unique_graphs"])
    assert decoder.captures == 2, "one graph per movie's cache"
    assert compiled[0] >= 1 and compiled[1] == compiled[0], "the second movie reuses the compiled step"


@pytest.mark.parametrize("splits", [2, 4])
def test_split_prefix_blocks_merge_to_the_same_attention(splits):
    torch.manual_seed(5)
    query, keys, values = torch.randn(1, 2, 3, 8), torch.randn(1, 2, 16, 8), torch.randn(1, 2, 16, 8)
    whole = attend_to_prefix(query, keys, values, scale=0.3, kernel="math")
    split = attend_to_prefix(query, keys, values, scale=0.3, kernel="math", splits=splits)
    torch.testing.assert_close(split[0], whole[0])
    torch.testing.assert_close(split[1], whole[1])
    with pytest.raises(ValueError, match="do not divide"):
        attend_to_prefix(query, keys[:, :, :15], values[:, :, :15], scale=0.3, splits=splits)


def test_fast_inference_options_leave_a_cpu_model_alone(processor):
    from moviellm_model.fast_paths import enable_fast_inference

    from .conftest import make_model

    model = make_model(processor, seed=0)
    before = model.config.to_dict()
    assert enable_fast_inference(model) is False
    assert model.config.to_dict() == before and model.model.language_model._compiled_call_impl is None
