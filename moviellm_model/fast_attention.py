"""LLaMA-VID's attention masks for a compiled language model (opt-in through `LlamaVidConfig.fast_attention`).

transformers materialises the causal mask whenever it is traced by `torch.compile`: inside a graph it cannot look at
the padding mask to see that it is all ones. A materialised mask takes SDPA off its flash/cuDNN causal kernels (on a
14k-token movie prompt: the memory-efficient kernel at a quarter of cuDNN's rate, on the full square instead of the
causal half), so a compiled prefill would be slower than an eager one.

The attention implementation registered here is transformers' SDPA function unchanged; only its mask function differs:
when there is no padding mask (`LlamaVidModel.forward` drops an all-ones mask eagerly, before the decoder) and the mask
is plain causal, it returns `None` also while tracing, so SDPA runs with `is_causal=True` exactly as it does eagerly.
Everything else (padding, static-cache decoding, sliding windows, packed sequences) goes to transformers' `sdpa_mask`.

Measured and rejected (benchmarks/RESULTS.md, 2026-11-26): a split-KV decode path written as fused reductions for
inductor ran at 0.9 TB/s against 2.4 TB/s for SDPA's own masked kernel over a 14.6k-token static cache on an H100, so
decoding keeps SDPA.
"""

from __future__ import annotations

from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, causal_mask_function, sdpa_mask
from transformers.modeling_utils import AttentionInterface

__all__ = ["FAST_ATTENTION", "fast_attention_mask", "register"]

#: Name under which the implementation is registered in transformers' attention and mask interfaces.
FAST_ATTENTION = "llamavid_sdpa"


def fast_attention_mask(
    batch_size: int,
    q_length: int,
    kv_length: int,
    q_offset=0,
    kv_offset=0,
    mask_function=causal_mask_function,
    attention_mask=None,
    local_size: int | None = None,
    allow_is_causal_skip: bool = True,
    **kwargs,
):
    """transformers' `sdpa_mask`, except that a plain causal mask without padding is skipped also while tracing.

    Skipping means SDPA runs with `is_causal=True` (prompt, `q_length == kv_length`) or without a mask (one query over a
    dynamic cache), exactly what transformers does eagerly; with a static cache transformers disables the skip for
    decoding (`allow_is_causal_skip=False`) and the mask is built as usual.
    """
    plain_causal = (
        allow_is_causal_skip
        and attention_mask is None
        and local_size is None
        and mask_function is causal_mask_function
        and isinstance(q_offset, int)
        and isinstance(kv_offset, int)
        and kv_offset == 0
    )
    if plain_causal and (q_length == 1 or q_length == kv_length):
        return None
    return sdpa_mask(
        batch_size=batch_size,
        q_length=q_length,
        kv_length=kv_length,
        q_offset=q_offset,
        kv_offset=kv_offset,
        mask_function=mask_function,
        attention_mask=attention_mask,
        local_size=local_size,
        allow_is_causal_skip=allow_is_causal_skip,
        **kwargs,
    )


def register() -> None:
    """Make `FAST_ATTENTION` known to transformers (idempotent; done when `moviellm_model` is imported)."""
    AttentionInterface.register(FAST_ATTENTION, sdpa_attention_forward)
    AttentionMaskInterface.register(FAST_ATTENTION, fast_attention_mask)
