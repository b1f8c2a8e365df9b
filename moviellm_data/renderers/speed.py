"""How fast the diffusion renderer computes a keyframe, never what it shows.

Fused attention projections, channels-last memory, ``torch.compile`` of the denoisers (the renderer pads
batches to the compiled size so the graph is reused) and the choice of the scaled-dot-product attention
kernel: each leaves the image the same up to floating-point rounding, which is why none of them is part
of the dataset recipe.
"""

from __future__ import annotations

import contextlib
import logging
import time

from .settings import RenderSettings

logger = logging.getLogger(__name__)

#: ``--attention`` names -> ``torch.nn.attention.SDPBackend`` members.
SDPA_KERNELS = {"flash": "FLASH_ATTENTION", "cudnn": "CUDNN_ATTENTION", "efficient": "EFFICIENT_ATTENTION",
                "math": "MATH"}


def short_error(err: BaseException) -> str:
    """The first line of an error, at most 200 characters, for one-sentence messages and logs."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def fuse_projections(base, refiner, vae) -> None:
    """Fuse the q/k/v projections of the UNets (and the base's VAE); models with added KV projections cannot."""
    for pipe, fuse_vae in ((base, True), (refiner, False)):
        if pipe is not None and hasattr(pipe, "fuse_qkv_projections") and getattr(pipe, "unet", None) is not None:
            try:
                pipe.fuse_qkv_projections(unet=True, vae=fuse_vae and vae is not None)
            except (ValueError, AttributeError) as err:
                logger.info("not fusing attention projections: %s", err)


def use_channels_last(modules) -> None:
    """Channels-last memory for convolution-heavy modules (the UNets and the VAE)."""
    import torch

    for module in modules:
        module.to(memory_format=torch.channels_last)


def compile_denoisers(settings: RenderSettings, denoisers, vae, device) -> bool:
    """``torch.compile`` the denoisers (and the VAE decoder with ``compile_vae``) when the settings ask for it here.

    Returns whether anything was compiled. Offloaded models are never compiled (they move between devices).
    """
    if settings.compiles_on(device.type) and settings.offload == "none":
        import torch._inductor.config as inductor_config

        inductor_config.conv_1x1_as_mm = True  # 1x1 convolutions (UNet projections) as matmuls
        for module in denoisers:
            module.compile(mode=settings.compile_mode, dynamic=False)
        if settings.compile_vae and vae is not None:
            vae.decoder.compile(mode=settings.compile_mode, dynamic=False)
        return True
    wanted = settings.preset.compile if settings.compile is None else settings.compile
    if wanted and device.type != "cuda":
        logger.info("not compiling on %s (pass compile=True explicitly to force it)", device)
    return False


def choose_attention(choice: str, device, dtype, batch_size: int, width: int, height: int) -> tuple[str, list | None]:
    """The SDPA kernel to use and the backend priority list that selects it (None: PyTorch's default).

    ``auto`` times the candidates on this card at the UNet's largest attention shape (CUDA, half precision only).
    """
    import torch
    from torch.nn.attention import SDPBackend

    if choice == "auto":
        if device.type != "cuda" or dtype == torch.float32:
            choice = "default"
        else:
            choice = fastest_attention(device, dtype, batch_size, width, height)
    if choice == "default":
        return choice, None
    chosen = getattr(SDPBackend, SDPA_KERNELS[choice])
    # Keep slower kernels after the chosen one for shapes it cannot take (the VAE's 512-wide head).
    return choice, [chosen] + [b for b in (SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH) if b != chosen]


def fastest_attention(device, dtype, batch_size: int, width: int, height: int) -> str:
    """The fastest of the cuDNN, flash and memory-efficient kernels on this card, or ``default`` if none runs."""
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    batch = 2 * batch_size  # classifier-free guidance doubles the batch
    tokens = (height // 16) * (width // 16)  # self-attention at the first attention level
    q = torch.randn(batch, 10, tokens, 64, device=device, dtype=dtype)
    timings = {}
    for name in ("cudnn", "flash", "efficient"):
        try:
            with sdpa_kernel([getattr(SDPBackend, SDPA_KERNELS[name])]):
                for _ in range(2):
                    F.scaled_dot_product_attention(q, q, q)
                torch.cuda.synchronize(device)
                start = time.perf_counter()
                for _ in range(5):
                    F.scaled_dot_product_attention(q, q, q)
                torch.cuda.synchronize(device)
            timings[name] = time.perf_counter() - start
        except RuntimeError as err:
            logger.info("SDPA kernel %s unavailable: %s", name, short_error(err))
    del q
    if not timings:
        return "default"
    best = min(timings, key=timings.get)
    logger.info("SDPA kernel timings %s: using %s", {k: round(v * 1000, 2) for k, v in timings.items()}, best)
    return best


def attention_context(backends: list | None):
    """The context in which the pipelines run with the chosen kernel first (nothing for PyTorch's default)."""
    if backends is None:
        return contextlib.nullcontext()
    from torch.nn.attention import sdpa_kernel

    try:
        return sdpa_kernel(backends, set_priority=True)
    except TypeError:  # older torch: no priorities, the chosen kernel is still enabled first
        return sdpa_kernel(backends)
