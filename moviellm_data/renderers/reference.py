"""The reference keyframe recipe exactly as MovieLLM/DreamFrame run it, as a baseline.

One image per call: the SDXL base denoises the first ``switch`` of a ``steps``-step schedule and returns
latents, the refiner (sharing the base's VAE and second text encoder) finishes them and decodes, with a
fixed negative prompt and one seeded generator per frame. :class:`DiffusionRenderer` must produce the
same image for the same seed (tests), faster (``benchmarks/bench_render.py``).
"""

from __future__ import annotations

import numpy as np

from .noise import starting_latents


def reference_keyframe(
    base,
    refiner,
    prompt: str,
    negative_prompt: str,
    seed: int,
    steps: int = 40,
    switch: float = 0.75,
    guidance_scale: float = 5.0,
    width: int = 1024,
    height: int = 1024,
) -> np.ndarray:
    """One uint8 [H, W, 3] keyframe, made the reference's way (batch 1, base then refiner, pipeline decode).

    The starting noise comes from a CPU generator seeded with ``seed``, drawn in float32
    (:func:`~moviellm_data.renderers.noise.starting_latents`), so that it depends on neither the device nor the
    dtype, and is the noise :class:`DiffusionRenderer` starts the same seed from.
    """
    import torch

    generator = torch.Generator("cpu").manual_seed(seed)
    noise = starting_latents(base, [generator], width, height)
    if refiner is None:
        image = base(prompt=prompt, negative_prompt=negative_prompt, num_inference_steps=steps,
                     guidance_scale=guidance_scale, generator=generator, width=width, height=height,
                     latents=noise, output_type="np").images[0]
    else:
        latents = base(prompt=prompt, negative_prompt=negative_prompt, num_inference_steps=steps,
                       denoising_end=switch, guidance_scale=guidance_scale, generator=generator, width=width,
                       height=height, latents=noise, output_type="latent").images
        image = refiner(prompt=prompt, negative_prompt=negative_prompt, num_inference_steps=steps,
                        denoising_start=switch, guidance_scale=guidance_scale, image=latents, generator=generator,
                        output_type="np").images[0]
    return (np.asarray(image) * 255).round().astype(np.uint8)
