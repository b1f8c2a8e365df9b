"""Selective activation checkpointing for long sequences: keep the attention kernels' outputs, recompute the rest.

With full checkpointing every decoder layer's forward runs twice, and at 64K tokens attention is the larger part of
a layer's work (its cost grows with the square of the length, the projections' linearly). Keeping each attention
kernel's output (and its log-sum-exp, what its backward needs) costs 2 x tokens x width bytes per layer in bf16
(0.5 GiB per layer at 64K for a 7B) and spares the quadratic recomputation; the projections and the MLP are still
recomputed. Pass `keep_attention_context` as `context_fn` of `torch.utils.checkpoint.checkpoint`
(`gradient_checkpointing_kwargs={"use_reentrant": False, "context_fn": keep_attention_context}`).
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

__all__ = ["ATTENTION_OPS", "keep_attention_context"]


def _attention_ops() -> set:
    names = ("_scaled_dot_product_flash_attention", "_scaled_dot_product_efficient_attention",
             "_scaled_dot_product_cudnn_attention", "_scaled_dot_product_flash_attention_for_cpu",
             "_flash_attention_forward", "_efficient_attention_forward")
    return {getattr(torch.ops.aten, name).default for name in names if hasattr(torch.ops.aten, name)}


ATTENTION_OPS = _attention_ops()


def _policy(ctx, op, *args, **kwargs) -> CheckpointPolicy:
    return CheckpointPolicy.MUST_SAVE if op in ATTENTION_OPS else CheckpointPolicy.PREFER_RECOMPUTE


def keep_attention_context():
    """The (forward, recompute) context pair of a checkpoint that saves attention outputs and recomputes the rest."""
    return create_selective_checkpoint_contexts(_policy)
