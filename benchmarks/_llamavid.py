"""LLaMA-VID at the benchmarks' sizes: the 7B configuration (random weights) or a tiny one for CPU smoke runs."""

from __future__ import annotations

import torch

from moviellm_model import LlamaVidConfig, LlamaVidForConditionalGeneration


def build_config(tiny: bool) -> LlamaVidConfig:
    """LLaMA-VID 7B (224 px, "mean": 2 tokens per frame), or a tiny model of the same structure."""
    if not tiny:
        return LlamaVidConfig()  # LLaMA-VID 7B, 224 px, "mean": 2 tokens per frame
    return LlamaVidConfig(
        vision_config=dict(image_size=28, patch_size=14, hidden_size=176, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=96),
        qformer_config=dict(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=48, encoder_hidden_size=176, max_position_embeddings=64),
        text_config=dict(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=4, max_position_embeddings=4096,
                         rope_parameters={"rope_type": "linear", "factor": 16.0, "rope_theta": 10000.0}),
        num_query_tokens=4, image_token_index=256, video_token_index=257,
    )


def build_model(config, device, dtype) -> LlamaVidForConditionalGeneration:
    """The model with random weights on `device` in `dtype`, SDPA attention, eval mode, no gradients."""
    with torch.device(device):
        model = LlamaVidForConditionalGeneration._from_config(config, attn_implementation="sdpa", dtype=dtype)
    return model.eval().requires_grad_(False)


def build_stage3_model(tiny: bool):
    """(device, config, model) for training benchmarks: bf16 on a GPU (fp32 on the CPU), train mode, `stage3` frozen."""
    from moviellm_model.training.trainer import apply_freeze

    device = torch.device("cuda" if torch.cuda.is_available() and not tiny else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    config = build_config(tiny)
    model = build_model(config, device, dtype)
    model.train()
    apply_freeze(model, "stage3")
    return device, config, model
