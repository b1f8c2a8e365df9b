"""Fixtures of the diffusion-renderer tests: a tiny SDXL base and refiner saved as diffusers folders.

The models are built from configs (random weights, seeded) and saved with ``save_pretrained``; every test
loads them back through ``from_pretrained``, the path users take. Frames are 64 x 64, 2-4 steps, float32
(half precision on CPU is slow and not what these tests are about).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from moviellm_data.renderers.from_configs import save_tiny_sdxl
from moviellm_data.script import MovieScript
from moviellm_data.writers.base import MovieRequest
from moviellm_data.writers.procedural import ProceduralWriter


@pytest.fixture(autouse=True, scope="session")
def _quiet_diffusers():
    """The byte-level test tokenizer makes long prompts; diffusers warns about truncation each call."""
    from diffusers.utils import logging as diffusers_logging

    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    yield
    diffusers_logging.set_verbosity(level)


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every render test runs single-threaded (see `one_torch_thread`)."""


@pytest.fixture(scope="session")
def tiny_sdxl(tmp_path_factory) -> tuple[Path, Path]:
    """(base folder, refiner folder) of the tiny SDXL."""
    root = tmp_path_factory.mktemp("tiny-sdxl")
    base, refiner = root / "base", root / "refiner"
    save_tiny_sdxl(base, refiner, seed=0)
    return base, refiner


@pytest.fixture(scope="session")
def tiny_script() -> MovieScript:
    """A 12-frame procedural movie (2 acts x 2 scenes x 3 shots)."""
    return ProceduralWriter("tiny").write(MovieRequest(id="m000000_render", index=0, theme="a love story", seed=3))


@pytest.fixture(scope="session")
def short_script() -> MovieScript:
    """A 6-frame procedural movie (1 act x 2 scenes x 3 shots)."""
    return ProceduralWriter("1x2x3").write(MovieRequest(id="m000001_short", index=1, theme="a heist", seed=4))


@pytest.fixture
def make_renderer(tiny_sdxl, tmp_path):
    """``make_renderer(**overrides)``: a fast CPU DiffusionRenderer on the tiny SDXL (not yet loaded).

    The overrides are :class:`~moviellm_data.renderers.settings.RenderSettings` fields.
    """
    from moviellm_data.renderers.diffusion import DiffusionRenderer
    from moviellm_data.renderers.settings import RenderSettings

    base, refiner = tiny_sdxl

    def make(**overrides) -> DiffusionRenderer:
        kwargs = dict(
            model=str(base), refiner=str(refiner), preset="fast", width=64, height=64, steps=2, dtype="float32",
            batch_size=4, style_steps=2, style_images=2, style_cache=tmp_path / "style-cache", vae_dtype="float32",
        )
        kwargs.update(overrides)
        return DiffusionRenderer(RenderSettings(**kwargs))

    return make


@pytest.fixture(scope="session")
def tiny_ip_adapter(tmp_path_factory, tiny_sdxl):
    """An IP-Adapter folder for the tiny SDXL: ``ip-adapter.safetensors`` + ``image_encoder/`` (random weights)."""
    import torch
    from diffusers import UNet2DConditionModel
    from diffusers.models.embeddings import ImageProjection
    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    folder = tmp_path_factory.mktemp("ip-adapter")
    torch.manual_seed(0)
    encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, image_size=32,
        patch_size=8, projection_dim=16,
    ))
    encoder.save_pretrained(str(folder / "image_encoder"))

    unet = UNet2DConditionModel.from_pretrained(str(tiny_sdxl[0]), subfolder="unet")
    cross = unet.config.cross_attention_dim
    tensors, key_id = {}, 1
    for name in unet.attn_processors:  # diffusers numbers the cross-attention layers 1, 3, 5, ...
        if name.endswith("attn1.processor"):
            continue
        if name.startswith("mid_block"):
            hidden = unet.config.block_out_channels[-1]
        elif name.startswith("up_blocks"):
            hidden = list(reversed(unet.config.block_out_channels))[int(name[len("up_blocks.")])]
        else:
            hidden = unet.config.block_out_channels[int(name[len("down_blocks.")])]
        tensors[f"ip_adapter.{key_id}.to_k_ip.weight"] = torch.randn(hidden, cross) * 0.3
        tensors[f"ip_adapter.{key_id}.to_v_ip.weight"] = torch.randn(hidden, cross) * 0.3
        key_id += 2
    projection = ImageProjection(cross_attention_dim=cross, image_embed_dim=16, num_image_text_embeds=4)
    for key, value in projection.state_dict().items():
        tensors["image_proj." + key.replace("image_embeds", "proj")] = value.contiguous()
    save_file(tensors, str(folder / "ip-adapter.safetensors"))
    return folder
