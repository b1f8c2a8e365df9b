"""Decoding a batch of prompts that share a prefilled prefix, reading the prefix once per step (cascade attention).

Questions about one movie share everything up to the question: system prompt, 14,400 visual tokens, subtitles. The
prefix is prefilled once; what remains is decoding the questions together. Copying the prefix's keys and values into
every row of a batch cache (what a plain static or dynamic cache needs) makes every decoding step read them once per
row: for three questions about a 2-hour movie that is 3 x 8.3 GB of cache beside 13.5 GB of 7B weights per token.

`SharedPrefixCache` keeps the prefix once ([1, heads, P, dim], the prefill's own tensors, not copied) and gives each row
only its own tail (the question's suffix and the generated tokens) in a preallocated static buffer. Its layers return
`PrefixedStates(prefix, own)` instead of one key tensor, and the attention implementation registered here
(`SHARED_PREFIX_ATTENTION`, switched on by `shared_prefix_attention` around `generate`) splits the softmax exactly:

- prefix: every query of every row sees all of it, so the rows' queries are folded into one sequence and attend to
  the single copy in one kernel, which also returns the log-sum-exp of each query's scores;
- own tail: each row's queries against its own tail under the causal and padding mask (a few hundred keys, in
  float32);
- the two partial outputs are merged with their log-sum-exps (the same softmax over the concatenated keys).

Bytes read per step: weights + one prefix + the tails, instead of weights + rows x prefix. The positions, the mask and
the cache length seen by transformers are those of the full virtual sequence (prefix + tail), so `generate`'s
position ids, masks, compiled decoding and CUDA graphs (`cuda_graph_decoding.py`) work unchanged.
"""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import torch
from transformers.cache_utils import Cache, StaticLayer
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
from transformers.modeling_utils import AttentionInterface

from .prefix_attention_kernel import prefix_attention, prefix_attention_available

__all__ = [
    "PREFIX_KERNELS",
    "SHARED_PREFIX_ATTENTION",
    "PrefixedStates",
    "SharedPrefixCache",
    "SharedPrefixLayer",
    "attend_to_prefix",
    "register",
    "shared_prefix_attention",
    "shared_prefix_attention_forward",
]

#: Name under which the implementation is registered in transformers' attention and mask interfaces.
SHARED_PREFIX_ATTENTION = "llamavid_shared_prefix"
#: Kernels for the prefix part: "triton" (our split-KV kernel, `prefix_attention_kernel.py`: fp16/bf16 on CUDA), "flash"
#: (FlashAttention-2 through PyTorch, fp16/bf16 on CUDA), "cudnn" (cuDNN's attention through PyTorch, CUDA),
#: "efficient" (PyTorch's memory-efficient kernel) or "math" (matrix products in float32; CPU and any dtype).
#: "auto": the first of triton, flash, math that applies.
PREFIX_KERNELS = ("auto", "triton", "flash", "cudnn", "efficient", "math")


class PrefixedStates(NamedTuple):
    """Keys (or values) of a shared-prefix cache layer: the prefix once and each row's own tail."""

    prefix: torch.Tensor  # [1, kv_heads, P, dim]
    own: torch.Tensor  # [rows, kv_heads, T, dim]: the rows' tails, written up to the cache's current length


class SharedPrefixLayer(StaticLayer):
    """A static cache layer over a shared prefix: positions `0..S-1` are the shared part of the prefix (one copy for
    every row), positions `S..S+T-1` each row's own tail, written in place like a static cache (`cumulative_length`
    counts both). The prefix's last `P - S` tokens start every row's tail (see `SharedPrefixCache`)."""

    def __init__(self, prefix_keys: torch.Tensor, prefix_values: torch.Tensor, rows: int, tail_length: int,
                 shared_length: int):
        if prefix_keys.ndim != 4 or prefix_keys.shape[0] != 1:
            raise ValueError(f"prefix keys must be [1, heads, length, dim], got {tuple(prefix_keys.shape)}.")
        prefix_length = int(prefix_keys.shape[2])
        if not 0 < shared_length <= prefix_length or tail_length < prefix_length - shared_length:
            raise ValueError(f"a prefix of {prefix_length} tokens cannot be split into {shared_length} shared tokens "
                             f"and a tail of {tail_length}.")
        super().__init__(max_cache_len=int(shared_length) + int(tail_length))
        self.prefix_keys, self.prefix_values = prefix_keys[:, :, :shared_length], prefix_values[:, :, :shared_length]
        self.rows, self.tail_length = int(rows), int(tail_length)
        self.cumulative_length = torch.tensor(prefix_length, dtype=torch.long)
        # allocated now: `generate` reads the cache's length (the prefix's) before the first update
        self.lazy_initialization(prefix_keys, prefix_values)
        rest = prefix_length - shared_length
        self.keys[:, :, :rest] = prefix_keys[:, :, shared_length:]
        self.values[:, :, :rest] = prefix_values[:, :, shared_length:]

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        """The rows' tails, shaped after the prefix (not after the first update's states)."""
        if self.is_initialized:
            return
        shape = (self.rows, self.prefix_keys.shape[1], self.tail_length)
        self.device, self.batch_size, self.num_heads = self.prefix_keys.device, self.rows, self.prefix_keys.shape[1]
        self.k_head_dim, self.v_head_dim = self.prefix_keys.shape[-1], self.prefix_values.shape[-1]
        self.keys = torch.zeros(*shape, self.k_head_dim, dtype=self.prefix_keys.dtype, device=self.device)
        self.values = torch.zeros(*shape, self.v_head_dim, dtype=self.prefix_values.dtype, device=self.device)
        self.cumulative_length = self.cumulative_length.to(self.device)
        if not torch.compiler.is_compiling():  # fixed addresses: the decoding step is compiled and graph-captured
            for tensor in (self.keys, self.values, self.cumulative_length, self.prefix_keys, self.prefix_values):
                torch._dynamo.mark_static_address(tensor)
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs) -> tuple:
        count = key_states.shape[-2]
        start = self.cumulative_length - self.prefix_keys.shape[2]  # where the tail continues (a device tensor)
        positions = torch.arange(count, device=self.device) + start
        self.cumulative_length.add_(count)
        self.keys.index_copy_(2, positions, key_states.to(self.keys.dtype))
        self.values.index_copy_(2, positions, value_states.to(self.values.dtype))
        return PrefixedStates(self.prefix_keys, self.keys), PrefixedStates(self.prefix_values, self.values)

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Beam search reorders the rows' tails; the prefix is the same for every row."""
        beam_idx = beam_idx.to(self.keys.device)
        self.keys.copy_(self.keys.index_select(0, beam_idx))
        self.values.copy_(self.values.index_select(0, beam_idx))

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("a shared-prefix cache cannot be cropped (assisted decoding is not supported).")


class SharedPrefixCache(Cache):
    """A decoding cache for `rows` prompts that continue one prefilled prefix, holding the prefix once.

    Args:
        prefix_states: per layer, the prefix's (keys, values) [1, kv_heads, P, dim], e.g. from the cache of a prefill
            of the prefix alone (kept by reference, never written).
        rows: rows of the batch (questions x beams).
        tail_length: tokens each row holds after the shared part: the prefix's last `P % align` tokens, its suffix
            and the generated tokens.
        align: the shared part is the prefix's first multiple of `align` tokens, so that its shape (which a compiled
            decoding step specialises on) changes only every `align` tokens of prefix; the rest of the prefix is
            copied into every row's tail.

    Use it with `generate` inside `shared_prefix_attention(model)`; the prompt passed to `generate` is the prefix ids
    followed by each row's suffix (the prefix part is not recomputed: it is already in the cache).
    """

    def __init__(self, prefix_states, rows: int, tail_length: int, align: int = 256):
        prefix_states = list(prefix_states)
        if not prefix_states:
            raise ValueError("a shared-prefix cache needs the prefix states of at least one layer.")
        shared = int(prefix_states[0][0].shape[2]) - self._copied_to_tails(prefix_states[0][0].shape[2], align)
        super().__init__(layers=[SharedPrefixLayer(keys, values, rows, tail_length, shared)
                                 for keys, values in prefix_states])

    @staticmethod
    def tail_length_for(prefix_length: int, added: int, align: int = 256) -> int:
        """The tail a prefix of `prefix_length` tokens needs for `added` more tokens per row, rounded up to `align`
        (so that the tail's shape, too, changes only every `align` tokens)."""
        rest = SharedPrefixCache._copied_to_tails(prefix_length, align)
        return -(-(rest + added) // align) * align

    @staticmethod
    def _copied_to_tails(prefix_length: int, align: int) -> int:
        """How many of the prefix's last tokens every row's tail holds: all beyond the last multiple of `align` (none
        for a prefix shorter than `align`, which is shared whole)."""
        return int(prefix_length) % align if prefix_length >= align else 0

    @property
    def max_batch_size(self) -> int:
        return self.layers[0].rows

    @property
    def max_cache_len(self) -> int:
        return self.layers[0].max_cache_len


# -------------------------------------------------------------------------------------------------------- attention


def _check_kernel(kernel: str) -> None:
    if kernel not in PREFIX_KERNELS:
        raise ValueError(f"prefix kernel must be one of {', '.join(PREFIX_KERNELS)}, not {kernel!r}.")


def _flash_available(query: torch.Tensor) -> bool:
    return query.is_cuda and query.dtype in (torch.float16, torch.bfloat16) and query.shape[-1] <= 256


def _merge_splits(outputs: torch.Tensor, lses: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention over S key blocks ([S, H, M, D] outputs, [S, H, M] log-sum-exps) -> over all keys, batch dim 1."""
    top = lses.max(dim=0, keepdim=True).values
    weights = torch.exp(lses - top)
    total = weights.sum(dim=0, keepdim=True)
    output = (outputs.float() * weights.unsqueeze(-1)).sum(dim=0, keepdim=True) / total.unsqueeze(-1)
    return output, top + torch.log(total)


def attend_to_prefix(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, scale: float,
                     kernel: str = "auto", splits: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Unmasked attention of `query` [1, H, M, D] to `keys`/`values` [1, H, P, D]: the output [1, H, M, D] and the
    log-sum-exp of each query's scaled scores [1, H, M] (float32), to merge with other keys' attention later.

    `splits` cuts the keys into that many blocks attended in parallel and merged (split-KV, as flash-decoding does): a
    few queries over a long prefix otherwise occupy only one thread block per head. 0 lets the kernel choose (the
    Triton kernel fills the GPU; the others do not split). For the kernels other than Triton it must divide P."""
    _check_kernel(kernel)
    if kernel == "auto":
        kernel = "triton" if prefix_attention_available(query) else "flash" if _flash_available(query) else "math"
    if kernel == "triton":
        return prefix_attention(query, keys, values, scale, splits=splits)
    if splits > 1:
        length = keys.shape[2]
        if length % splits:
            raise ValueError(f"{splits} splits do not divide a prefix of {length} tokens.")

        def blocks(tensor):  # [1, H, P, D] -> [S, H, P / S, D], a view
            return tensor[0].unflatten(1, (splits, length // splits)).transpose(0, 1)

        outputs, lses = attend_to_prefix(query.expand(splits, -1, -1, -1).contiguous(), blocks(keys), blocks(values),
                                         scale, kernel)
        return _merge_splits(outputs, lses)
    if kernel == "flash":
        output = torch.ops.aten._scaled_dot_product_flash_attention(query, keys, values, 0.0, False, False,
                                                                    scale=scale)
        return output[0], output[1].float()
    if kernel == "cudnn":
        output = torch.ops.aten._scaled_dot_product_cudnn_attention(query, keys, values, None, True, 0.0, False, False,
                                                                    scale=scale)
        return output[0], output[1].reshape(query.shape[:3]).float()
    if kernel == "efficient":
        output = torch.ops.aten._scaled_dot_product_efficient_attention(query, keys, values, None, True, 0.0, False,
                                                                        scale=scale)
        return output[0], output[1][..., : query.shape[2]].float()
    scores = torch.matmul(query.float(), keys.float().transpose(-1, -2)) * scale
    lse = torch.logsumexp(scores, dim=-1)
    return torch.matmul(torch.exp(scores - lse.unsqueeze(-1)), values.float()), lse


def _fold_rows(tensor: torch.Tensor, kv_heads: int) -> torch.Tensor:
    """[B, H, L, D] -> [1, kv_heads, (H / kv_heads) * B * L, D]: every row's queries as one sequence per key head."""
    rows, heads, length, dim = tensor.shape
    groups = heads // kv_heads
    return tensor.view(rows, kv_heads, groups, length, dim).permute(1, 2, 0, 3, 4).reshape(1, kv_heads, -1, dim)


def _unfold_rows(tensor: torch.Tensor, rows: int, heads: int, length: int) -> torch.Tensor:
    """The inverse of `_fold_rows` for [1, kv_heads, M, ...] (outputs with a trailing dim, log-sum-exps without)."""
    kv_heads = tensor.shape[1]
    trailing = tensor.shape[3:]
    unfolded = tensor.view(kv_heads, heads // kv_heads, rows, length, *trailing)
    order = (2, 0, 1, 3, *range(4, 4 + len(trailing)))
    return unfolded.permute(*order).reshape(rows, heads, length, *trailing)


def _own_attention(query, keys, values, mask, scale) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's queries [B, H, L, D] to its own tail [B, Hkv, T, D] under `mask` (the tail's columns of the
    causal/padding mask: bool, True = attend, or additive float), in float32; a query that sees no key of its tail
    gets a zero output and a log-sum-exp of -inf."""
    groups = query.shape[1] // keys.shape[1]
    if groups > 1:
        keys, values = keys.repeat_interleave(groups, dim=1), values.repeat_interleave(groups, dim=1)
    scores = torch.matmul(query.float(), keys.float().transpose(-1, -2)) * scale
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask.float()
    lse = torch.logsumexp(scores, dim=-1)
    safe = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))
    return torch.matmul(torch.exp(scores - safe.unsqueeze(-1)), values.float()), lse


#: How `shared_prefix_attention_forward` attends to the prefix; set by `shared_prefix_attention` (kernel: one of
#: `PREFIX_KERNELS`; splits: key blocks attended in parallel and merged, 0 for the kernel's choice).
_prefix_settings = {"kernel": "auto", "splits": 0}


def shared_prefix_attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0,
                                    scaling: float | None = None, **kwargs):
    """transformers attention function: exact softmax attention over a `SharedPrefixCache` (keys and values arrive as
    `PrefixedStates`); plain tensors go to transformers' SDPA function."""
    if not isinstance(key, PrefixedStates):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    rows, heads, length, dim = query.shape
    scale = scaling if scaling is not None else dim**-0.5
    kv_heads = key.prefix.shape[1]
    prefix_out, prefix_lse = attend_to_prefix(_fold_rows(query, kv_heads), key.prefix, value.prefix, scale,
                                              _prefix_settings["kernel"], _prefix_settings["splits"])
    prefix_out = _unfold_rows(prefix_out, rows, heads, length).float()
    prefix_lse = _unfold_rows(prefix_lse, rows, heads, length)
    tail = key.own.shape[2]
    mask = None if attention_mask is None else attention_mask[..., attention_mask.shape[-1] - tail :]
    own_out, own_lse = _own_attention(query, key.own, value.own, mask, scale)
    # softmax over [prefix keys | own keys] from the two partial softmaxes
    top = torch.maximum(prefix_lse, own_lse)
    prefix_weight = torch.exp(prefix_lse - top).unsqueeze(-1)
    own_weight = torch.exp(own_lse - top).unsqueeze(-1)
    output = (prefix_out * prefix_weight + own_out * own_weight) / (prefix_weight + own_weight)
    return output.to(query.dtype).transpose(1, 2).contiguous(), None


def _full_mask(*args, **kwargs):
    """The mask of the virtual sequence (prefix + tails), always materialised: the tails' part needs it."""
    kwargs["allow_is_causal_skip"] = False
    return sdpa_mask(*args, **kwargs)


def register() -> None:
    """Make `SHARED_PREFIX_ATTENTION` known to transformers (idempotent; done when `moviellm_model` is imported)."""
    AttentionInterface.register(SHARED_PREFIX_ATTENTION, shared_prefix_attention_forward)
    AttentionMaskInterface.register(SHARED_PREFIX_ATTENTION, _full_mask)


@contextlib.contextmanager
def shared_prefix_attention(model, kernel: str = "auto", splits: int = 0):
    """Within the block, the language model of a `LlamaVidForConditionalGeneration` attends with
    `shared_prefix_attention_forward` (for `generate` over a `SharedPrefixCache`); restored afterwards.

    `kernel` (one of `PREFIX_KERNELS`) and `splits` (key blocks of the prefix attended in parallel, then merged; 0:
    the kernel's choice) choose how the prefix part is computed; the result is the same up to rounding
    (`benchmarks/probe_shared_prefix.py` times them on a 2-hour movie's shapes)."""
    _check_kernel(kernel)
    if splits < 0:
        raise ValueError(f"splits must be 0 (the kernel's choice) or more, not {splits}.")
    register()
    text_config = model.model.language_model.config
    before, settings_before = text_config._attn_implementation, dict(_prefix_settings)
    text_config._attn_implementation = SHARED_PREFIX_ATTENTION
    _prefix_settings.update(kernel=kernel, splits=splits)
    try:
        yield
    finally:
        text_config._attn_implementation = before
        _prefix_settings.update(settings_before)
