"""Image and text embeddings from transformers models, batched on the GPU when there is one.

:class:`ImageFeatureModel` wraps any transformers image model (CLIP, SigLIP, DINOv2, ViT, a CLIP vision tower...,
a Hub id or a folder) and gives, per image, a *global* embedding (CLIP's projected image embedding, the pooled
output of others: what CLIP-I / DINO-I compare) and a *style descriptor*: the per-channel mean and standard
deviation of the patch tokens of the model's middle layer (feature statistics, as in Gram-matrix and AdaIN style
measures, rather than what the picture shows). :class:`TextImageModel` adds the text side of CLIP-like models
(for CLIP-T). Both are L2-normalised, so a dot product is a cosine similarity.

Frames are resized, cropped and normalised on the device as the model's image processor specifies (its size,
crop size, mean and standard deviation; bicubic with antialiasing), so that a 1024 x 1024 keyframe costs the CPU
no more than its decoding.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..argtypes import looks_like_path
from ..errors import ConfigError
from ..renderers.speed import short_error

logger = logging.getLogger(__name__)


def default_device() -> str:
    """``cuda`` when there is a GPU, else ``cpu``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class DevicePreprocessor:
    """A transformers image processor's resize, center crop, rescale and normalisation, done in torch on the device."""

    def __init__(self, processor) -> None:
        size = dict(getattr(processor, "size", None) or {})
        crop = dict(getattr(processor, "crop_size", None) or {})
        self.size = size if getattr(processor, "do_resize", True) else {}
        self.crop = (crop.get("height"), crop.get("width")) if getattr(processor, "do_center_crop", False) and crop else None
        self.scale = float(getattr(processor, "rescale_factor", 1 / 255)) if getattr(processor, "do_rescale", True) else 1.0
        normalize = getattr(processor, "do_normalize", True)
        self.mean = list(processor.image_mean) if normalize else None
        self.std = list(processor.image_std) if normalize else None

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        if "shortest_edge" in self.size:  # transformers: the short side becomes the size, the long one scales along
            short, long = (height, width) if height <= width else (width, height)
            new_short, new_long = self.size["shortest_edge"], int(self.size["shortest_edge"] * long / short)
            return (new_short, new_long) if height <= width else (new_long, new_short)
        if "height" in self.size and "width" in self.size:
            return int(self.size["height"]), int(self.size["width"])
        return height, width

    def __call__(self, frames):
        """uint8 [B, H, W, 3] (a tensor on the device) -> float32 pixel values [B, 3, h, w]."""
        import torch
        import torch.nn.functional as F

        x = frames.permute(0, 3, 1, 2).float()
        height, width = x.shape[-2:]
        target = self.output_size(height, width)
        if target != (height, width):
            x = F.interpolate(x, size=target, mode="bicubic", align_corners=False, antialias=True).clamp(0, 255)
        if self.crop is not None:
            crop_h, crop_w = self.crop
            top, left = max(0, (x.shape[-2] - crop_h) // 2), max(0, (x.shape[-1] - crop_w) // 2)
            x = x[..., top:top + crop_h, left:left + crop_w]
        x = x * self.scale
        if self.mean is not None:
            mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
            std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
            x = (x - mean) / std
        return x


def _load(ref: str, option: str, loader, what: str):
    local = Path(ref).expanduser()
    if not local.exists() and looks_like_path(ref):
        raise ConfigError(f"{option} {ref} does not exist; give a saved transformers model folder or a Hub model id.")
    try:
        return loader(str(local) if local.exists() else ref)
    except Exception as err:  # transformers/hub raise many types; the user needs one sentence
        logger.debug("loading %s failed", ref, exc_info=True)
        raise ConfigError(f"cannot load the {what} {ref!r} ({short_error(err)}); give a transformers model folder or "
                          f"a Hub model id that this machine can reach with {option}.") from None


def _normalise(x):
    return x.float() / x.float().norm(dim=-1, keepdim=True).clamp_min(1e-12)


class ImageFeatureModel:
    """Global embeddings and style descriptors of images from a transformers image model.

    Args:
        ref: Hub id or folder of the model (and its image processor).
        option: the command-line option that named it (for error messages).
        device: ``cuda``, ``cpu``...; None: CUDA when available.
        batch_size: images per forward pass.
    """

    def __init__(self, ref: str, option: str = "--image-model-for-consistency", device: str | None = None,
                 batch_size: int = 64) -> None:
        import torch
        from transformers import AutoImageProcessor, AutoModel

        self.ref = ref
        self.device = torch.device(device or default_device())
        self.dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        self.batch_size = int(batch_size)
        self.model = _load(ref, option, lambda r: AutoModel.from_pretrained(r, dtype=self.dtype), "model")
        self.model.to(self.device).eval()
        self.preprocess = DevicePreprocessor(_load(ref, option, AutoImageProcessor.from_pretrained, "image processor"))

    def _vision(self, pixels):
        """(pooled global embedding, hidden states) of one batch of pixel values."""
        model = self.model
        if hasattr(model, "vision_model"):  # CLIP, SigLIP, ...: the image tower (then CLIP's projection)
            out = model.vision_model(pixel_values=pixels, output_hidden_states=True)
            pooled = out.pooler_output
            projection = getattr(model, "visual_projection", None)
            return (projection(pooled) if projection is not None else pooled), out.hidden_states
        out = model(pixel_values=pixels, output_hidden_states=True)
        pooled = getattr(out, "image_embeds", None)  # CLIPVisionModelWithProjection
        if pooled is None:
            pooled = getattr(out, "pooler_output", None)
        if pooled is None:
            pooled = out.last_hidden_state[:, 0]
        return pooled, out.hidden_states

    def embed_frames(self, frames: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """``(global [N, D], style [N, 2E])`` for uint8 frames [H, W, 3] (one size per call), both L2-normalised."""
        import torch

        globals_, styles = [], []
        with torch.inference_mode():
            for start in range(0, len(frames), self.batch_size):
                chunk = np.stack(frames[start:start + self.batch_size])
                pixels = self.preprocess(torch.from_numpy(chunk).to(self.device, non_blocking=True))
                pooled, hidden = self._vision(pixels.to(self.dtype))
                tokens = hidden[len(hidden) // 2][:, 1:].float()  # the middle layer's patch tokens
                style = torch.cat([tokens.mean(dim=1), tokens.std(dim=1)], dim=-1)
                globals_.append(_normalise(pooled).cpu())
                styles.append(_normalise(style).cpu())
        return torch.cat(globals_).numpy(), torch.cat(styles).numpy()


class TextImageModel(ImageFeatureModel):
    """A CLIP-like model (an image and a text tower in one embedding space): image features plus text embeddings."""

    def __init__(self, ref: str, option: str = "--clip-model", device: str | None = None, batch_size: int = 64) -> None:
        from transformers import AutoTokenizer

        super().__init__(ref, option, device, batch_size)
        if not hasattr(self.model, "get_text_features") or not hasattr(self.model, "vision_model"):
            raise ConfigError(f"{option} {ref} is a {type(self.model).__name__}, not a text-image model such as CLIP; "
                              "give a CLIP (or SigLIP) checkpoint.")
        self.tokenizer = _load(ref, option, AutoTokenizer.from_pretrained, "tokenizer")
        text_config = getattr(self.model.config, "text_config", self.model.config)
        self.max_length = int(getattr(text_config, "max_position_embeddings", 77))
        # SigLIP was trained on prompts padded to the full length; CLIP pools at the end token, padding is free.
        self.padding = "max_length" if "siglip" in str(self.model.config.model_type) else True

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised text embeddings [N, D] (prompts longer than the text tower takes are truncated, as CLIP-T does)."""
        import torch

        out = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                tokens = self.tokenizer(list(texts[start:start + self.batch_size]), padding=self.padding,
                                        truncation=True, max_length=self.max_length, return_tensors="pt")
                tokens = {k: v.to(self.device) for k, v in tokens.items() if k in ("input_ids", "attention_mask")}
                features = self.model.get_text_features(**tokens)
                if not isinstance(features, torch.Tensor):  # transformers 5.2x returns an output object
                    features = features.pooler_output
                out.append(_normalise(features).cpu())
        return torch.cat(out).numpy()


__all__ = ["DevicePreprocessor", "ImageFeatureModel", "TextImageModel", "default_device"]
