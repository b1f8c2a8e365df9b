"""Scoring models built from configs with random weights, saved as ordinary transformers folders.

Two uses, neither of which may download anything: tests build a tiny CLIP (and DINOv2) that scores 64 x 64 frames in
milliseconds and load it back through ``from_pretrained``, the path users take; the scoring benchmark builds CLIP
ViT-L/14 and DINOv2-base at full size (random weights time exactly like trained ones). The tokenizer is the
byte-level CLIP tokenizer of :mod:`moviellm_data.renderers.from_configs` (every prompt tokenizes, at CLIP's 77).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..renderers.from_configs import write_byte_level_clip_tokenizer

_TEXT_IDS = {"bos_token_id": 512, "eos_token_id": 513, "pad_token_id": 513}  # the byte-level tokenizer's ids

TINY_CLIP: dict[str, Any] = {
    "text_config": {"vocab_size": 514, "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
                    "num_attention_heads": 4, "max_position_embeddings": 77, **_TEXT_IDS},
    "vision_config": {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4,
                      "image_size": 64, "patch_size": 16},
    "projection_dim": 16,
}
# openai/clip-vit-large-patch14's sizes (its vocabulary is larger than the byte-level one; only ids < 514 occur).
CLIP_VIT_L14: dict[str, Any] = {
    "text_config": {"vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                    "num_attention_heads": 12, "max_position_embeddings": 77, "hidden_act": "quick_gelu", **_TEXT_IDS},
    "vision_config": {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
                      "num_attention_heads": 16, "image_size": 224, "patch_size": 14, "hidden_act": "quick_gelu"},
    "projection_dim": 768,
}
TINY_DINOV2: dict[str, Any] = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
                               "intermediate_size": 37, "image_size": 64, "patch_size": 16}
# facebook/dinov2-base's sizes.
DINOV2_BASE: dict[str, Any] = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                               "intermediate_size": 3072, "image_size": 518, "patch_size": 14}


def save_clip(folder: str | Path, config: dict | None = None, seed: int = 0, image_size: int = 64,
              text_projection=None) -> Path:
    """A CLIP with random weights (``config``: :data:`TINY_CLIP` by default), its tokenizer and image processor
    (resize and crop to ``image_size``), saved into ``folder``; ``text_projection`` replaces that weight."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    folder = Path(folder)
    torch.manual_seed(seed)
    model = CLIPModel(CLIPConfig(**(config or TINY_CLIP))).eval()
    if text_projection is not None:
        model.text_projection.weight.data.copy_(text_projection)
    model.save_pretrained(str(folder))
    write_byte_level_clip_tokenizer(folder)
    CLIPImageProcessor(size={"shortest_edge": image_size},
                       crop_size={"height": image_size, "width": image_size}).save_pretrained(str(folder))
    return folder


def save_dinov2(folder: str | Path, config: dict | None = None, seed: int = 0, image_size: int = 64,
                resize: int | None = None) -> Path:
    """A DINOv2 with random weights (:data:`TINY_DINOV2` by default) and its image processor (shortest edge to
    ``resize``, then a center crop of ``image_size``, ImageNet mean and std), saved into ``folder``."""
    import torch
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    folder = Path(folder)
    torch.manual_seed(seed)
    Dinov2Model(Dinov2Config(**(config or TINY_DINOV2))).eval().save_pretrained(str(folder))
    BitImageProcessor(size={"shortest_edge": resize or image_size}, crop_size={"height": image_size, "width": image_size},
                      image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]).save_pretrained(str(folder))
    return folder


__all__ = ["CLIP_VIT_L14", "DINOV2_BASE", "TINY_CLIP", "TINY_DINOV2", "save_clip", "save_dinov2"]
