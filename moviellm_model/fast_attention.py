"""LLaMA-VID's attention function for the language model (opt-in through `LlamaVidConfig.fast_attention`).

It is PyTorch SDPA, exactly as transformers' "sdpa" implementation calls it, with two changes that only matter under
`torch.compile`:

1. Decoding (one new token per sequence) over a long cache. SDPA's kernels parallelise a single query over
   batch x heads only (32 thread blocks for Llama-7B at batch 1, on a GPU with 132 multiprocessors), and with a static
   cache they also need a mask, which rules out the flash kernel and its split-KV path. Here the attention is written
   as fused multiply-reduce operations in float32 (`q . k`, masked softmax, `p . v`): inductor turns them into a few
   bandwidth-bound kernels with split reductions that use the whole GPU and read the cache once (flash-decoding).
   Outside `torch.compile` the same inputs go to SDPA.
2. Causal masks stay implicit. transformers materialises the causal mask whenever it is traced (it cannot check the
   padding mask for "all ones" inside a graph), which forces SDPA off its flash/cuDNN kernels for a compiled prefill.
   When there is no padding mask (`LlamaVidModel.forward` drops an all-ones mask before the decoder), this mask
   function returns `None` so SDPA runs with `is_causal=True`, as it does eagerly.

Both change only the kernels, not the function computed (float32 softmax throughout).
"""

from __future__ import annotations

import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, causal_mask_function, sdpa_mask
from transformers.modeling_utils import AttentionInterface

__all__ = ["FAST_ATTENTION", "decode_attention", "fast_attention_forward", "fast_attention_mask", "register"]

#: Name under which the function is registered in transformers' attention and mask interfaces.
FAST_ATTENTION = "llamavid_sdpa"

# Arguments that change the attention function itself: leave those calls to transformers' SDPA path.
_UNSUPPORTED = ("position_bias", "softcap", "sliding_window", "s_aux", "sinks")


def decode_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
) -> torch.Tensor:
    """Attention of one query token per sequence over all cached keys, softmax in float32.

    Args:
        query: [B, H, 1, D].
        key, value: [B, Hkv, L, D] (the whole cache; H must be a multiple of Hkv).
        attention_mask: `None`, a boolean mask (True = attend) or an additive float mask broadcastable to [B, 1, 1, L].
        scaling: softmax scale.

    Returns:
        [B, 1, H, D] in the query dtype (the layout transformers' attention functions return).

    Written as broadcast products and sums on purpose: compiled, each reduction is one fused kernel that reads the cache
    once; eagerly it would materialise [B, H, L, D] products, so call it eagerly only on small inputs (tests).
    """
    batch, heads, _, dim = query.shape
    kv_heads, length = key.shape[1], key.shape[2]
    groups = heads // kv_heads
    q = query.reshape(batch, kv_heads, groups, 1, dim).float()
    scores = (q * key[:, :, None].float()).sum(-1) * scaling  # [B, Hkv, G, L]
    if attention_mask is not None:
        mask = attention_mask.reshape(attention_mask.shape[0], -1, length)[:, :1]  # [B|1, 1, L]: one mask for all heads
        mask = mask[:, :, None, :]  # [B|1, 1, 1, L]
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, float("-inf"))
        else:
            scores = scores + mask.float()
    probs = torch.softmax(scores, dim=-1)  # [B, Hkv, G, L]
    out = (probs[..., None] * value[:, :, None].float()).sum(-2)  # [B, Hkv, G, D]
    return out.reshape(batch, heads, 1, dim).transpose(1, 2).to(query.dtype)


def _use_decode_path(query, key, value, attention_mask, dropout, kwargs) -> bool:
    if query.shape[2] != 1 or dropout or not torch.compiler.is_compiling():
        return False
    if any(kwargs.get(name) is not None for name in _UNSUPPORTED):
        return False
    if attention_mask is not None and (attention_mask.ndim != 4 or attention_mask.shape[1] != 1):
        return False  # per-head masks: leave them to SDPA
    return query.shape[1] % key.shape[1] == 0 and key.shape[-1] == value.shape[-1] == query.shape[-1]


def fast_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """transformers attention interface: the split-KV decode path when it applies, transformers' SDPA otherwise."""
    if _use_decode_path(query, key, value, attention_mask, dropout, kwargs):
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        return decode_attention(query, key, value, attention_mask, scale), None
    return sdpa_attention_forward(
        module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs
    )


def fast_attention_mask(
    batch_size: int,
    q_length: int,
    kv_length: int,
    q_offset=0,
    kv_offset=0,
    mask_function=causal_mask_function,
    attention_mask: torch.Tensor | None = None,
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
    AttentionInterface.register(FAST_ATTENTION, fast_attention_forward)
    AttentionMaskInterface.register(FAST_ATTENTION, fast_attention_mask)
