"""SDXL base and refiner pipelines built from configs with random weights.

Two uses, neither of which may download anything: tests build a tiny SDXL (a few thousand parameters,
64 x 64 frames in milliseconds) and save it so that the renderer loads it through the real
``from_pretrained`` code paths; the render benchmark builds the published SDXL 1.0 base and refiner
architectures at full size (random weights time exactly like trained ones).

The tokenizers are byte-level CLIP BPE tokenizers with no merges, written locally: every byte is a
token, so any prompt tokenizes, and the text encoders see sequences of the real length (77).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

# The tiny SDXL: two CLIP text encoders of different widths (like CLIP-L 768 and OpenCLIP-bigG 1280),
# a two-level UNet with "text_time" added conditioning and a two-level VAE (64 x 64 images, 32 x 32
# latents). The refiner conditions on text encoder 2 only and on an aesthetic score (5 time ids).
TINY_SDXL: dict[str, dict[str, Any]] = {
    "text_encoder": {
        "vocab_size": 514, "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
        "num_attention_heads": 4, "max_position_embeddings": 77, "projection_dim": 32, "hidden_act": "gelu",
        "bos_token_id": 512, "eos_token_id": 513, "pad_token_id": 513,
    },
    "text_encoder_2": {
        "vocab_size": 514, "hidden_size": 48, "intermediate_size": 37, "num_hidden_layers": 2,
        "num_attention_heads": 4, "max_position_embeddings": 77, "projection_dim": 48, "hidden_act": "gelu",
        "bos_token_id": 512, "eos_token_id": 513, "pad_token_id": 513,
    },
    "unet": {
        "sample_size": 32, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
        "block_out_channels": [32, 64],
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
        "attention_head_dim": [2, 4], "use_linear_projection": True,
        "addition_embed_type": "text_time", "addition_time_embed_dim": 8,
        "transformer_layers_per_block": [1, 2],
        "projection_class_embeddings_input_dim": 6 * 8 + 48,  # 6 time ids x 8 + pooled text (encoder 2)
        "cross_attention_dim": 32 + 48,  # both encoders' hidden states, concatenated
        "norm_num_groups": 32,
    },
    "refiner_unet": {
        "sample_size": 32, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
        "block_out_channels": [32, 64],
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
        "attention_head_dim": [2, 4], "use_linear_projection": True,
        "addition_embed_type": "text_time", "addition_time_embed_dim": 8,
        "transformer_layers_per_block": [1, 1],
        "projection_class_embeddings_input_dim": 5 * 8 + 48,  # 5 time ids (aesthetic score) x 8 + pooled
        "cross_attention_dim": 48,
        "norm_num_groups": 32,
    },
    "vae": {
        "block_out_channels": [32, 64], "in_channels": 3, "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"],
        "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"],
        "latent_channels": 4, "sample_size": 64, "norm_num_groups": 32, "scaling_factor": 0.13025,
        "force_upcast": True,
    },
    "scheduler": {
        "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000,
        "prediction_type": "epsilon", "steps_offset": 1, "timestep_spacing": "leading",
        "interpolation_type": "linear", "use_karras_sigmas": False,
    },
}


def bytes_to_unicode() -> list[str]:
    """GPT-2/CLIP's reversible map from the 256 byte values to printable characters."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for c in codes]


def write_byte_level_clip_tokenizer(folder: str | Path, model_max_length: int = 77):
    """Write and return a CLIP tokenizer whose vocabulary is the 256 bytes (with and without ``</w>``).

    Ids: 0-255 bytes, 256-511 word-final bytes, 512 ``<|startoftext|>``, 513 ``<|endoftext|>``.
    """
    from transformers import CLIPTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    chars = bytes_to_unicode()
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": 256 + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = 512
    vocab["<|endoftext|>"] = 513
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    tokenizer = CLIPTokenizer.from_pretrained(str(folder), model_max_length=model_max_length)
    tokenizer.save_pretrained(str(folder))
    return tokenizer


def build_sdxl_pipelines(
    configs: dict[str, dict[str, Any]] | None = None,
    *,
    refiner: bool = True,
    seed: int = 0,
    device: str = "cpu",
    dtype: Any = None,
    tokenizer_dir: str | Path | None = None,
):
    """An SDXL base pipeline (and refiner sharing its VAE, text encoder 2 and tokenizer 2) with random weights.

    Args:
        configs: ``text_encoder``, ``text_encoder_2``, ``unet``, ``refiner_unet``, ``vae`` and ``scheduler``
            configs (diffusers/transformers config dicts); :data:`TINY_SDXL` when None.
        refiner: also build the refiner; returns ``(base, refiner_or_None)``.
        seed: seeds the random initialisation, so two builds give identical weights.
        device: where the weights are created (building the full-size models directly on the GPU is
            much faster than on the CPU).
        dtype: cast every model to this dtype after building (None keeps float32).
        tokenizer_dir: where to write the byte-level tokenizer; a temporary folder when None.
    """
    import tempfile

    import torch
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLImg2ImgPipeline,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    configs = copy.deepcopy(configs or TINY_SDXL)
    if tokenizer_dir is None:
        tokenizer_dir = tempfile.mkdtemp(prefix="moviellm-tokenizer-")
    tokenizer = write_byte_level_clip_tokenizer(tokenizer_dir)
    from transformers import CLIPTokenizer

    tokenizer_2 = CLIPTokenizer.from_pretrained(str(tokenizer_dir))

    def strip(config: dict) -> dict:
        return {k: v for k, v in config.items() if not k.startswith("_")}

    torch.manual_seed(seed)
    with torch.device(device):
        text_encoder = CLIPTextModel(CLIPTextConfig(**strip(configs["text_encoder"])))
        text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**strip(configs["text_encoder_2"])))
        unet = UNet2DConditionModel.from_config(strip(configs["unet"]))
        vae = AutoencoderKL.from_config(strip(configs["vae"]))
        refiner_unet = UNet2DConditionModel.from_config(strip(configs["refiner_unet"])) if refiner else None
    scheduler = EulerDiscreteScheduler.from_config(strip(configs["scheduler"]))
    models = [text_encoder, text_encoder_2, unet, vae] + ([refiner_unet] if refiner_unet is not None else [])
    for model in models:
        model.eval()
        if dtype is not None:
            model.to(dtype=dtype)
    base = StableDiffusionXLPipeline(
        vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
        tokenizer_2=tokenizer_2, unet=unet, scheduler=scheduler, add_watermarker=False,
    )
    refiner_pipe = None
    if refiner_unet is not None:
        refiner_pipe = StableDiffusionXLImg2ImgPipeline(
            vae=vae, text_encoder=None, text_encoder_2=text_encoder_2, tokenizer=None, tokenizer_2=tokenizer_2,
            unet=refiner_unet, scheduler=EulerDiscreteScheduler.from_config(scheduler.config),
            requires_aesthetics_score=True, force_zeros_for_empty_prompt=False, add_watermarker=False,
        )
    return base, refiner_pipe


def save_tiny_sdxl(base_dir: str | Path, refiner_dir: str | Path | None = None, seed: int = 0) -> None:
    """Build the tiny SDXL (and refiner) and save them as ordinary diffusers model folders."""
    base, refiner = build_sdxl_pipelines(TINY_SDXL, refiner=refiner_dir is not None, seed=seed)
    base.save_pretrained(str(base_dir))
    if refiner is not None:
        refiner.save_pretrained(str(refiner_dir))
