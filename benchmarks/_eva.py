"""The EVA-ViT-g tower as the original runs it, for the benchmarks' reference arm, and its FLOP count."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RefAttention(nn.Module):
    """EVA attention as the original computes it: q/v biases, explicit softmax."""

    def __init__(self, dim, heads):
        super().__init__()
        self.num_heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        qkv_bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias, requires_grad=False), self.v_bias))
        qkv = F.linear(input=x, weight=self.qkv.weight, bias=qkv_bias)
        qkv = qkv.reshape(B, N, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        q = q * self.scale
        attn = (q @ k.transpose(-2, -1)).softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(B, N, -1)
        return self.proj(x)


class RefBlock(nn.Module):
    """Pre-norm EVA block, exact GELU, no layer scale."""

    def __init__(self, dim, heads, hidden):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = RefAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential()
        self.mlp.fc1 = nn.Linear(dim, hidden)
        self.mlp.act = nn.GELU()
        self.mlp.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class RefEVA(nn.Module):
    """`VisionTransformer.forward_features` of LLaMA-VID's eva_vit.py (39 blocks, CLS kept, no final norm)."""

    def __init__(self, config):
        super().__init__()
        dim, patch = config.hidden_size, config.patch_size
        self.patch_embed = nn.Sequential()
        self.patch_embed.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, config.num_patches + 1, dim))
        self.blocks = nn.ModuleList(
            [RefBlock(dim, config.num_attention_heads, config.intermediate_size) for _ in range(config.num_hidden_layers)]
        )

    def forward(self, x):
        x = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return x

    def load_from(self, ours: nn.Module) -> None:
        state = {}
        for key, value in ours.state_dict().items():
            key = key.replace("embeddings.patch_embedding.", "patch_embed.proj.")
            key = key.replace("embeddings.class_embedding", "cls_token").replace("embeddings.position_embedding", "pos_embed")
            state[key.replace("layers.", "blocks.")] = value
        self.load_state_dict(state, strict=True)


def eva_flops_per_frame(vc) -> float:
    """FLOPs of one frame through the tower of vision config `vc` (blocks and patch embedding)."""
    tokens = vc.num_patches + 1
    c, i = vc.hidden_size, vc.intermediate_size
    per_block = tokens * 2 * (4 * c * c + 2 * c * i) + 4 * tokens * tokens * c
    return vc.num_hidden_layers * per_block + 2 * vc.num_patches * c * 3 * vc.patch_size**2
