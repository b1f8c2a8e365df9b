"""Residual add + LayerNorm in one pass for the EVA tower's inference path.

`LlamaVidVisionConfig.fused_residual_norm` makes the tower add each residual branch to the residual stream inside
the next LayerNorm's kernel, which writes the updated stream back in place and normalises it in the same pass: per
residual, one read of the stream, one of the branch and two writes, instead of a three-pass add followed by a two-pass
norm that re-reads the sum. The arithmetic is the unfused one (the sum rounded once to the stream's dtype, then a
float32 LayerNorm of it), so only the reduction order inside the norm differs.

On CUDA the kernel is written in Triton; elsewhere (or without Triton) it is `add_` followed by `F.layer_norm`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

try:  # Triton ships with CUDA builds of torch; CPU-only installs take the PyTorch path below
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the torch build
    triton = None

__all__ = ["add_layer_norm_"]


def add_layer_norm_(hidden: torch.Tensor, branch: torch.Tensor | None, norm: nn.LayerNorm) -> torch.Tensor:
    """`hidden += branch` in place (when `branch` is given), then return `norm(hidden)`.

    Args:
        hidden: [rows, width] contiguous residual stream; updated in place, so call this only without autograd.
        branch: [rows, width] output of the residual branch to add (bias included), or None.
        norm: the LayerNorm to apply (its weight, bias and eps).
    """
    affine = norm.weight is not None and norm.bias is not None
    fused = triton is not None and affine and hidden.is_cuda and hidden.dim() == 2 and hidden.is_contiguous()
    if fused and (branch is None or (branch.shape == hidden.shape and branch.is_contiguous())):
        return _add_layer_norm_triton(hidden, branch, norm)
    if branch is not None:
        hidden.add_(branch)
    return F.layer_norm(hidden, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


if triton is not None:

    @triton.jit
    def _add_layer_norm_kernel(
        hidden_ptr, branch_ptr, weight_ptr, bias_ptr, out_ptr, width, eps,
        HAS_BRANCH: tl.constexpr, BLOCK: tl.constexpr,
    ):
        row = tl.program_id(0).to(tl.int64)
        cols = tl.arange(0, BLOCK)
        inside = cols < width
        offsets = row * width + cols
        x = tl.load(hidden_ptr + offsets, mask=inside, other=0.0)
        if HAS_BRANCH:
            residual = tl.load(branch_ptr + offsets, mask=inside, other=0.0)
            # rounded to the stream's dtype once, as the unfused `hidden + branch`
            x = (x.to(tl.float32) + residual.to(tl.float32)).to(hidden_ptr.dtype.element_ty)
            tl.store(hidden_ptr + offsets, x, mask=inside)
        x = x.to(tl.float32)
        mean = tl.sum(x, axis=0) / width
        centered = tl.where(inside, x - mean, 0.0)
        rstd = 1.0 / tl.sqrt(tl.sum(centered * centered, axis=0) / width + eps)
        weight = tl.load(weight_ptr + cols, mask=inside, other=0.0).to(tl.float32)
        shift = tl.load(bias_ptr + cols, mask=inside, other=0.0).to(tl.float32)
        tl.store(out_ptr + offsets, (centered * rstd * weight + shift).to(out_ptr.dtype.element_ty), mask=inside)

    def _add_layer_norm_triton(hidden: torch.Tensor, branch: torch.Tensor | None, norm: nn.LayerNorm) -> torch.Tensor:
        rows, width = hidden.shape
        out = torch.empty_like(hidden)
        block = triton.next_power_of_2(width)
        _add_layer_norm_kernel[(rows,)](
            hidden, branch if branch is not None else hidden, norm.weight, norm.bias, out, width, norm.eps,
            HAS_BRANCH=branch is not None, BLOCK=block, num_warps=min(16, max(4, block // 256)),
        )
        return out
