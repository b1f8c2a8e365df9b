"""moviellm_model.prefix_attention_kernel: the Triton split-KV kernel for the shared prefix computes softmax attention
and its log-sum-exp exactly (float64 reference), for any split, query count and key strides, and as the "triton"
prefix kernel of `shared_prefix_attention_forward` gives what the float32 math kernel gives.

The kernel runs on CUDA; here it runs in Triton's interpreter (`TRITON_INTERPRET=1`, CPU tensors), which must be set
before Triton compiles anything, so the checks run in a fresh Python process. float16: the interpreter's bfloat16
matrix product is wrong (the GPU's is checked by `benchmarks/probe_shared_prefix.py`)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("triton", reason="Triton is not installed (the `test` extra installs it for this test)")

REPO = Path(__file__).resolve().parents[2]

CHECKS = textwrap.dedent(
    """
    import torch
    from moviellm_model.prefix_attention_kernel import prefix_attention, prefix_attention_available, split_plan
    from moviellm_model.shared_prefix import PrefixedStates, attend_to_prefix, shared_prefix_attention_forward

    torch.manual_seed(0)

    def reference(query, keys, values, scale):
        scores = query.double() @ keys.double().transpose(-1, -2) * scale
        return torch.softmax(scores, dim=-1) @ values.double(), torch.logsumexp(scores, dim=-1)

    def relative(got, expected):
        return ((got.double() - expected).norm() / expected.norm()).item()

    # heads, queries, keys, head size, splits (0: the kernel's plan); the keys a view of a longer cache
    for heads, queries, length, dim, splits in [(2, 3, 300, 64, 0), (2, 20, 1000, 32, 3), (1, 70, 129, 16, 1),
                                                (3, 1, 64, 128, 0), (2, 5, 17, 32, 0), (2, 3, 250, 32, 7)]:
        query = torch.randn(1, heads, queries, dim).half()
        cache_k, cache_v = torch.randn(1, heads, length + 9, dim).half(), torch.randn(1, heads, length + 9, dim).half()
        keys, values = cache_k[:, :, :length], cache_v[:, :, :length]
        scale = dim ** -0.5
        out, lse = prefix_attention(query, keys, values, scale, splits=splits)
        expected_out, expected_lse = reference(query, keys, values, scale)
        assert out.shape == (1, heads, queries, dim) and lse.shape == (1, heads, queries), (out.shape, lse.shape)
        assert out.dtype == lse.dtype == torch.float32
        assert relative(out, expected_out) < 2e-3, (heads, queries, length, splits, relative(out, expected_out))
        assert (lse.double() - expected_lse).abs().max() < 1e-3, (heads, queries, length, splits)

    # the plan: every split holds whole key blocks, none is empty, enough programs to fill the GPU
    for length in (1, 63, 64, 65, 16128, 16160):
        splits, per_split = split_plan(32, 1, length, 528)
        assert per_split % 64 == 0 and (splits - 1) * per_split < length <= splits * per_split, (length, splits)
    assert split_plan(32, 1, 16128, 528)[0] == 16

    # the attention function with the Triton prefix kernel = with float32 matrix products (GQA, a padded tail)
    rows, kv_heads, groups, tail, prefix, dim = 3, 2, 2, 6, 40, 32
    query = torch.randn(rows, kv_heads * groups, 1, dim).half()
    prefix_k, prefix_v = torch.randn(1, kv_heads, prefix, dim).half(), torch.randn(1, kv_heads, prefix, dim).half()
    own_k, own_v = torch.randn(rows, kv_heads, tail, dim).half(), torch.randn(rows, kv_heads, tail, dim).half()
    mask = torch.ones(rows, 1, 1, prefix + tail, dtype=torch.bool)
    mask[1, ..., prefix : prefix + 2] = False
    mask[..., -1] = False

    class Module:
        num_key_value_groups, is_causal, training = groups, True, False

    from moviellm_model import shared_prefix
    results = {}
    for kernel in ("triton", "math"):
        shared_prefix._prefix_settings.update(kernel=kernel, splits=0)
        results[kernel] = shared_prefix_attention_forward(
            Module(), query, PrefixedStates(prefix_k, own_k), PrefixedStates(prefix_v, own_v), mask)[0]
    assert relative(results["triton"], results["math"].double()) < 2e-3
    assert prefix_attention_available(query) and not prefix_attention_available(query.float())

    # one opaque operator inside a compiled (fullgraph) step: the same numbers as the eager call
    compiled = torch.compile(lambda *tensors: prefix_attention(*tensors, 0.2), fullgraph=True, backend="aot_eager")
    folded = query[:, :kv_heads].reshape(1, kv_heads, rows, dim)
    eager = prefix_attention(folded, prefix_k, prefix_v, 0.2)
    for got, expected in zip(compiled(folded, prefix_k, prefix_v), eager):
        assert torch.equal(got, expected)
    print("ok")
    """
)


def test_the_triton_prefix_kernel_is_exact_in_the_interpreter():
    environment = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", CHECKS], capture_output=True, text=True, env=environment,
                            timeout=600)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]


def test_without_cuda_or_the_interpreter_auto_does_not_choose_triton():
    import torch

    from moviellm_model.prefix_attention_kernel import prefix_attention, prefix_attention_available
    from moviellm_model.shared_prefix import attend_to_prefix

    query, keys = torch.randn(1, 2, 3, 16).half(), torch.randn(1, 2, 20, 16).half()
    if os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("this process runs Triton's interpreter")
    assert not prefix_attention_available(query)
    out, lse = attend_to_prefix(query, keys, keys, scale=0.25)  # auto: the math kernel on the CPU
    assert out.dtype == torch.float32 and lse.shape == (1, 2, 3)
    with pytest.raises(ValueError, match="choose another prefix kernel"):
        prefix_attention(query, keys, keys, 0.25)
