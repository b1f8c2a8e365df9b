"""Split-KV attention of a few queries over one long key sequence, in Triton (flash-decoding for a shared prefix).

While the questions about one movie are decoded together, every decoding step attends the rows' few queries (three
questions: three queries per head) to the same 16K-token prefix: a memory-bound read of the prefix with almost no
arithmetic. This kernel cuts the keys into splits so that every multiprocessor streams a slice: one program per (head,
split, block of queries) reads its keys and values once, keeps an online softmax in float32, and writes its partial
output and log-sum-exp; a second launch merges the splits (the exact softmax over all keys). On an H200 it reads a
2-hour movie's prefix at about 3.6 TB/s, as fast as PyTorch's FlashAttention-2 on the same folded queries, with a
lower error against float32 (`benchmarks/probe_shared_prefix.py`, RESULTS.md); it is the default where Triton runs
and needs no particular PyTorch attention backend.

Only the prefix part of `shared_prefix_attention_forward` uses it (kernel "triton"): unmasked attention, any strides
along heads and keys (the prefix is a view of the prefill's cache). It runs on CUDA in float16/bfloat16, and, for the
tests, in Triton's interpreter (`TRITON_INTERPRET=1`, CPU tensors). It is registered as the operator
`moviellm::prefix_attention`, which a compiled decoding step calls as one opaque operator.
"""

from __future__ import annotations

import functools
import math
import os

import torch

try:  # Triton ships with CUDA builds of torch; CPU-only installs use the other prefix kernels
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the torch build
    triton = None

__all__ = ["prefix_attention", "prefix_attention_available"]

#: Keys per loop iteration of one program, and the launch shape: the defaults are what measured fastest for
#: LLaMA-VID 7B's heads (128 dims) on an H200 (`benchmarks/probe_shared_prefix.py`).
BLOCK_N, NUM_WARPS, NUM_STAGES = 64, 4, 3
#: Programs per multiprocessor that the split heuristic aims at (several, so that the memory pipeline stays full).
PROGRAMS_PER_SM = 4


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def prefix_attention_available(query: torch.Tensor) -> bool:
    """Whether `prefix_attention` runs for queries like `query`: Triton importable, a CUDA tensor (or Triton's
    interpreter on the CPU), float16/bfloat16, a power-of-two head size from 16 to 256."""
    head_dim = query.shape[-1]
    return (triton is not None and (query.is_cuda or _interpreting())
            and query.dtype in (torch.float16, torch.bfloat16)
            and 16 <= head_dim <= 256 and head_dim & (head_dim - 1) == 0)


@functools.lru_cache(maxsize=None)
def _multiprocessors(cuda_index: int) -> int:
    """Multiprocessors of CUDA device `cuda_index` (4 for -1: the CPU under Triton's interpreter)."""
    return torch.cuda.get_device_properties(cuda_index).multi_processor_count if cuda_index >= 0 else 4


def split_plan(heads: int, query_blocks: int, keys: int, programs: int, block_n: int = BLOCK_N) -> tuple[int, int]:
    """(splits, keys per split): enough splits that heads x query blocks x splits reaches `programs`, each split a
    whole number of `block_n` key blocks and none empty."""
    return _slices(keys, max(1, programs // max(1, heads * query_blocks)), block_n)


def _slices(keys: int, splits: int, block_n: int) -> tuple[int, int]:
    """(splits, keys per split) for at most `splits` slices of whole `block_n` key blocks, none of them empty."""
    blocks = -(-keys // block_n)
    keys_per_split = -(-blocks // min(splits, blocks)) * block_n
    return -(-keys // keys_per_split), keys_per_split


def prefix_attention(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, scale: float, *,
                     splits: int = 0, block_n: int | None = None, num_warps: int | None = None,
                     num_stages: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Unmasked attention of `query` [1, H, M, D] to `keys`/`values` [1, H, N, D] (the same head count; the last dim
    contiguous, other strides free): the output [1, H, M, D] and each query's log-sum-exp [1, H, M], both float32.

    Args:
        scale: factor of the scores (usually D ** -0.5).
        splits: key splits per head (0: enough to give every multiprocessor `PROGRAMS_PER_SM` programs).
        block_n, num_warps, num_stages: the kernel's launch shape (default: the module's `BLOCK_N`, `NUM_WARPS`,
            `NUM_STAGES`).
    """
    if not prefix_attention_available(query):
        raise ValueError("the Triton prefix kernel needs Triton and CUDA float16/bfloat16 queries with a power-of-two "
                         "head size from 16 to 256; choose another prefix kernel.")
    heads, head_dim = query.shape[1], query.shape[3]
    if (keys.shape[0] != 1 or keys.shape[1] != heads or keys.shape[3] != head_dim or keys.shape[2] == 0
            or values.shape != keys.shape):
        raise ValueError(f"keys {tuple(keys.shape)} and values {tuple(values.shape)} do not match queries "
                         f"{tuple(query.shape)}.")
    # one opaque operator: torch.compile leaves the launch to it, and a CUDA graph captures it like any kernel
    return torch.ops.moviellm.prefix_attention(query, keys, values, float(scale), splits, block_n or BLOCK_N,
                                               num_warps or NUM_WARPS, num_stages or NUM_STAGES)


@torch.library.custom_op("moviellm::prefix_attention", mutates_args=())
def _prefix_attention_op(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, scale: float, splits: int,
                         block_n: int, num_warps: int, num_stages: int) -> tuple[torch.Tensor, torch.Tensor]:
    _, heads, queries, head_dim = query.shape
    length = keys.shape[2]
    query, keys, values = (t if t.stride(-1) == 1 else t.contiguous() for t in (query, keys, values))
    block_m = 16 if queries <= 16 else 64
    query_blocks = -(-queries // block_m)
    if splits <= 0:
        programs = PROGRAMS_PER_SM * _multiprocessors(query.device.index if query.is_cuda else -1)
        splits, keys_per_split = split_plan(heads, query_blocks, length, programs, block_n)
    else:
        splits, keys_per_split = _slices(length, splits, block_n)
    outputs = query.new_empty((heads, splits, queries, head_dim), dtype=torch.float32)
    lses = query.new_empty((heads, splits, queries), dtype=torch.float32)
    _partials_kernel[(heads, splits, query_blocks)](
        query, keys, values, outputs, lses, scale * math.log2(math.e),
        query.stride(1), query.stride(2), keys.stride(1), keys.stride(2), values.stride(1), values.stride(2),
        queries, length, keys_per_split, splits,
        HEAD_DIM=head_dim, BLOCK_M=block_m, BLOCK_N=block_n, num_warps=num_warps, num_stages=num_stages,
    )
    if splits == 1:
        return outputs.transpose(0, 1).contiguous(), lses.transpose(0, 1).contiguous()
    # the splits' merge in one more launch (as a handful of PyTorch ops it costs more than the kernel's own time)
    output = query.new_empty((1, heads, queries, head_dim), dtype=torch.float32)
    lse = query.new_empty((1, heads, queries), dtype=torch.float32)
    _merge_kernel[(heads, queries)](outputs, lses, output, lse, queries, splits, HEAD_DIM=head_dim,
                                    BLOCK_S=triton.next_power_of_2(splits))
    return output, lse


@_prefix_attention_op.register_fake
def _(query, keys, values, scale, splits, block_n, num_warps, num_stages):
    shape = query.shape
    return query.new_empty(shape, dtype=torch.float32), query.new_empty(shape[:3], dtype=torch.float32)


if triton is not None:

    @triton.jit
    def _partials_kernel(
        q_ptr, k_ptr, v_ptr, out_ptr, lse_ptr, scale_log2,
        stride_qh, stride_qm, stride_kh, stride_kn, stride_vh, stride_vn,
        queries, length, keys_per_split, splits,
        HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    ):
        """One (head, split, query block): softmax attention of the block's queries to the split's keys, kept in the
        base-2 domain (scores scaled by log2(e)) and written as a normalised partial output and its log-sum-exp."""
        head = tl.program_id(0)
        split = tl.program_id(1)
        rows = tl.program_id(2) * BLOCK_M + tl.arange(0, BLOCK_M)
        dims = tl.arange(0, HEAD_DIM)
        is_query = rows < queries
        q = tl.load(q_ptr + head.to(tl.int64) * stride_qh + rows[:, None] * stride_qm + dims[None, :],
                    mask=is_query[:, None], other=0.0)
        k_base = k_ptr + head.to(tl.int64) * stride_kh
        v_base = v_ptr + head.to(tl.int64) * stride_vh
        start = split * keys_per_split
        end = tl.minimum(start + keys_per_split, length)
        best = tl.full([BLOCK_M], float("-inf"), tl.float32)
        total = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
        for first in range(start, end, BLOCK_N):
            cols = first + tl.arange(0, BLOCK_N)
            is_key = cols < end
            k = tl.load(k_base + cols.to(tl.int64)[:, None] * stride_kn + dims[None, :], mask=is_key[:, None],
                        other=0.0)
            v = tl.load(v_base + cols.to(tl.int64)[:, None] * stride_vn + dims[None, :], mask=is_key[:, None],
                        other=0.0)
            scores = tl.dot(q, tl.trans(k)) * scale_log2
            scores = tl.where(is_key[None, :], scores, float("-inf"))
            new_best = tl.maximum(best, tl.max(scores, axis=1))
            rescale = tl.exp2(best - new_best)
            weights = tl.exp2(scores - new_best[:, None])
            total = total * rescale + tl.sum(weights, axis=1)
            acc = acc * rescale[:, None] + tl.dot(weights.to(v.dtype), v)
            best = new_best
        offset = (head * splits + split).to(tl.int64) * queries
        tl.store(out_ptr + (offset + rows)[:, None] * HEAD_DIM + dims[None, :], acc / total[:, None],
                 mask=is_query[:, None])
        # natural log: (best + log2(total)) * ln(2)
        tl.store(lse_ptr + offset + rows, (best + tl.log2(total)) * 0.6931471805599453, mask=is_query)

    @triton.jit
    def _merge_kernel(
        outputs_ptr, lses_ptr, output_ptr, lse_ptr, queries, splits,
        HEAD_DIM: tl.constexpr, BLOCK_S: tl.constexpr,
    ):
        """One (head, query): the splits' partial outputs [H, S, M, D] weighted by their share of the softmax
        (from the log-sum-exps [H, S, M]) -> the output [H, M, D] and the log-sum-exp over all keys [H, M]."""
        head = tl.program_id(0)
        row = tl.program_id(1)
        parts = tl.arange(0, BLOCK_S)
        dims = tl.arange(0, HEAD_DIM)
        is_split = parts < splits
        first = head.to(tl.int64) * splits * queries + row
        lses = tl.load(lses_ptr + first + parts * queries, mask=is_split, other=float("-inf"))
        top = tl.max(lses, axis=0)
        weights = tl.exp(lses - top)
        total = tl.sum(weights, axis=0)
        partial = tl.load(outputs_ptr + (first + parts.to(tl.int64)[:, None] * queries) * HEAD_DIM + dims[None, :],
                          mask=is_split[:, None], other=0.0)
        merged = tl.sum(partial * weights[:, None], axis=0) / total
        target = head.to(tl.int64) * queries + row
        tl.store(output_ptr + target * HEAD_DIM + dims, merged)
        tl.store(lse_ptr + target, top + tl.log(total))
