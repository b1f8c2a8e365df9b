"""The starting noise of a keyframe, a function of its seed alone.

Each frame's noise is drawn from its own CPU generator in float32 and only then cast to the pipeline's dtype, so a
seed gives the same noise alone or in any batch, on any device and in any dtype: PyTorch's CPU normal sampler takes a
different random stream for half-precision tensors on some versions (seen with torch 2.11: bf16 and fp32 draws of the
same seed differ), which would make the same seed a different image in fp16, bf16 and fp32.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["starting_latents"]


def starting_latents(pipe, generators: Sequence, width: int, height: int):
    """Unscaled starting latents [len(generators), C, H/f, W/f] for an SDXL-style pipeline, in its UNet's dtype.

    Pass them as ``latents=``; the pipeline scales them by the scheduler's initial sigma as it does its own noise.
    """
    import torch

    unet = pipe.unet
    factor = pipe.vae_scale_factor
    shape = (1, unet.config.in_channels, height // factor, width // factor)
    noise = torch.cat([torch.randn(shape, generator=generator, dtype=torch.float32) for generator in generators])
    return noise.to(dtype=unet.dtype)
