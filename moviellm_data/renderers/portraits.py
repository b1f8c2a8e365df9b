"""The character portraits a movie's frames were conditioned on, as one file shipped with the movie.

When the renderer conditions frames on character portraits (an IP-Adapter), each movie's sample carries
``<id>.portraits.safetensors``: one uint8 tensor [H, W, 3] per character that appears, named by the character's
name, so that anyone (``moviellm score`` among them) can compare the frames with the portraits they followed. Every
sample of such a dataset has the member (a movie in which nobody appears holds no tensors), as WebDataset readers
expect. Plain numpy: reading it needs neither torch nor diffusers.
"""

from __future__ import annotations

import json

import numpy as np

from ..errors import MovieLLMError

FORMAT = "moviellm-portraits-v1"
METADATA_KEY = "moviellm_portraits"
MEMBER = "portraits.safetensors"


def portraits_bytes(portraits: dict[str, np.ndarray]) -> bytes:
    """Serialise ``{character name: uint8 [H, W, 3]}`` as safetensors bytes (the same portraits, the same bytes)."""
    from safetensors.numpy import save

    tensors = {name: np.ascontiguousarray(image, dtype=np.uint8) for name, image in sorted(portraits.items())}
    info = json.dumps({"format": FORMAT, "characters": sorted(portraits)}, sort_keys=True)
    return save(tensors, metadata={METADATA_KEY: info})


def read_portraits(data: bytes, source: str = "portraits") -> dict[str, np.ndarray]:
    """``{character name: uint8 [H, W, 3]}`` from :func:`portraits_bytes`; one clear error for anything else."""
    from safetensors.numpy import load

    try:
        tensors = load(data)
    except Exception as err:  # safetensors raises its own error types for corrupt headers
        raise MovieLLMError(f"{source} is not a safetensors file ({err}); render the movie again.") from None
    for name, image in tensors.items():
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise MovieLLMError(f"{source} holds {name!r} as {image.dtype} {list(image.shape)}, not an RGB image.")
    return tensors


__all__ = ["FORMAT", "MEMBER", "portraits_bytes", "read_portraits"]
