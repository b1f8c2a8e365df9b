"""A causal-LM loss that never materialises the whole [tokens, vocabulary] logits tensor.

At stage 3 a sample is ~64K tokens, of which only the answers (a few hundred tokens) carry labels. The standard
loss computes logits for every position (64K x 32K: 4 GiB in bf16, 8 GiB more upcast to float32, and as much again
for their gradient) to then ignore almost all of them. This loss gathers the hidden states of the labelled positions
first and runs the LM head and the cross-entropy on those only, in chunks whose logits are recomputed in the
backward pass instead of kept. It is the same arithmetic as the standard loss (shifted cross-entropy, float32
logits, sum over labelled tokens divided by their count or by `num_items_in_batch`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = ["labelled_positions_lm_loss"]


def _chunk_loss(hidden: torch.Tensor, targets: torch.Tensor, lm_head: nn.Module) -> torch.Tensor:
    logits = lm_head(hidden).float()  # [n, V]
    return F.cross_entropy(logits, targets, reduction="sum")


def labelled_positions_lm_loss(
    hidden_states: torch.Tensor,
    lm_head: nn.Module,
    labels: torch.Tensor,
    ignore_index: int = -100,
    chunk_size: int = 4096,
    num_items_in_batch: int | torch.Tensor | None = None,
) -> torch.Tensor:
    """Next-token cross-entropy of `labels` from `hidden_states` [B, T, C] through `lm_head`, labelled rows only.

    Position t predicts `labels[:, t + 1]`. Returns the sum over labelled tokens divided by `num_items_in_batch` when
    given (gradient accumulation over batches, as transformers' loss does), else by their count. A batch without any
    labelled token gives a zero that still depends on the graph (every rank's backward runs the same way).
    """
    targets = F.pad(labels, (0, 1), value=ignore_index)[:, 1:].reshape(-1)  # [B*T]
    rows = (targets != ignore_index).nonzero().squeeze(-1)
    hidden = hidden_states.reshape(-1, hidden_states.shape[-1]).index_select(0, rows)  # [n, C]
    targets = targets.index_select(0, rows).to(hidden.device)
    if rows.numel() == 0:
        return hidden_states.sum() * 0.0
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, rows.numel(), chunk_size):
        piece, goal = hidden[start : start + chunk_size], targets[start : start + chunk_size]
        if rows.numel() > chunk_size and torch.is_grad_enabled():
            total = total + checkpoint(_chunk_loss, piece, goal, lm_head, use_reentrant=False)
        else:
            total = total + _chunk_loss(piece, goal, lm_head)
    denominator = num_items_in_batch if num_items_in_batch is not None else rows.numel()
    if isinstance(denominator, torch.Tensor):
        denominator = denominator.to(total.device)
    return total / denominator
