"""Image processor of LLaMA-VID: CLIP statistics, bicubic shortest-edge resize, center crop, optional pad-to-square.

It reproduces, with PIL and NumPy only, what transformers 4.31's `CLIPImageProcessor` did with the
`clip-patch14-224` / `clip-patch14-336` folders of the original repository (llamavid-spec.md, section 1.3), plus the
`expand2square` padding of LLaVA training (`image_aspect_ratio: pad`). It needs neither torchvision nor a
transformers image-processing backend, so it behaves the same on every transformers 5.x release.
"""

from __future__ import annotations

from typing import Any, TypedDict

import numpy as np
from transformers.feature_extraction_utils import BatchFeature
from transformers.image_processing_utils import BaseImageProcessor

__all__ = ["LlamaVidImageProcessor", "OPENAI_CLIP_MEAN", "OPENAI_CLIP_STD", "expand_to_square", "to_pil_rgb"]

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class LlamaVidImageProcessorKwargs(TypedDict, total=False):
    size: dict[str, int]
    crop_size: dict[str, int]
    resample: int
    rescale_factor: float
    image_mean: list[float]
    image_std: list[float]
    do_pad_to_square: bool


def to_pil_rgb(image: Any):
    """PIL image, uint8 array ([H, W, 3], [H, W] or [3, H, W]) or torch tensor -> RGB PIL image."""
    from PIL import Image  # imported here: the model classes work without Pillow

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if hasattr(image, "detach"):  # torch tensor
        image = image.detach().cpu().numpy()
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = array.transpose(1, 2, 0)  # channels first -> last
    if array.dtype != np.uint8:
        if np.issubdtype(array.dtype, np.floating) and array.size and array.max() <= 1.0:
            array = array * 255.0
        array = np.clip(np.round(array), 0, 255).astype(np.uint8)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    return Image.fromarray(array).convert("RGB")


def expand_to_square(image, background_color: tuple[int, int, int]):
    """LLaVA's `expand2square`: pad the short side symmetrically (floor on the top/left) with a flat colour."""
    from PIL import Image

    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    result = Image.new(image.mode, (side, side), background_color)
    result.paste(image, ((side - width) // 2, (side - height) // 2))
    return result


class LlamaVidImageProcessor(BaseImageProcessor):
    r"""Turns images and video frames into CLIP-normalised `pixel_values` of shape `[N, 3, crop, crop]`.

    Args:
        size (`dict`, *optional*, defaults to `{"shortest_edge": 224}`):
            The shortest edge is resized to this length, the other keeps the aspect ratio (truncated to an integer).
        crop_size (`dict`, *optional*, defaults to `{"height": 224, "width": 224}`):
            Center-crop size (the EVA input resolution).
        resample (`int`, *optional*, defaults to 3):
            PIL resampling filter (3 = bicubic).
        rescale_factor (`float`, *optional*, defaults to 1/255):
            Scale from uint8 to [0, 1].
        image_mean, image_std (`list[float]`, *optional*, default to the OpenAI CLIP statistics):
            Normalisation (CLIP statistics, not the 0.5/0.5 EVA defaults).
        do_pad_to_square (`bool`, *optional*, defaults to `False`):
            Pad still images to a square with the mean colour `(int(255 * mean))` = (122, 116, 104) before resizing,
            as LLaMA-VID training does (`image_aspect_ratio: pad`); the original CLI and evaluation do not pad.
            Video frames are never padded.
    """

    model_input_names = ["pixel_values"]
    valid_kwargs = LlamaVidImageProcessorKwargs

    def __init__(
        self,
        size: dict[str, int] | int | None = None,
        crop_size: dict[str, int] | int | None = None,
        resample: int = 3,
        rescale_factor: float = 1 / 255,
        image_mean: list[float] | tuple[float, ...] | None = None,
        image_std: list[float] | tuple[float, ...] | None = None,
        do_pad_to_square: bool = False,
        **kwargs: Any,
    ):
        # Keys of a CLIP preprocessor_config.json that this processor always applies.
        for key in ("do_resize", "do_center_crop", "do_rescale", "do_normalize", "do_convert_rgb", "image_processor_type"):
            kwargs.pop(key, None)
        super().__init__(**kwargs)
        if isinstance(size, int):
            size = {"shortest_edge": size}
        if isinstance(crop_size, int):
            crop_size = {"height": crop_size, "width": crop_size}
        self.size = dict(size or {"shortest_edge": 224})
        self.crop_size = dict(crop_size or {"height": 224, "width": 224})
        self.resample = int(resample)
        self.rescale_factor = float(rescale_factor)
        self.image_mean = list(image_mean if image_mean is not None else OPENAI_CLIP_MEAN)
        self.image_std = list(image_std if image_std is not None else OPENAI_CLIP_STD)
        self.do_pad_to_square = bool(do_pad_to_square)

    @property
    def background_color(self) -> tuple[int, int, int]:
        """Pad colour of `do_pad_to_square`: `int(255 * mean)` per channel, as LLaVA computes it."""
        return tuple(int(x * 255) for x in self.image_mean)

    def _resize_shortest_edge(self, image):
        target = self.size.get("shortest_edge")
        if target is None:  # explicit {"height", "width"}
            return image.resize((self.size["width"], self.size["height"]), resample=self.resample)
        width, height = image.size
        short, long = (width, height) if width <= height else (height, width)
        if short == target:
            return image
        new_short, new_long = target, int(target * long / short)
        new_width, new_height = (new_short, new_long) if width <= height else (new_long, new_short)
        return image.resize((new_width, new_height), resample=self.resample)

    def _center_crop(self, array: np.ndarray) -> np.ndarray:
        crop_height, crop_width = self.crop_size["height"], self.crop_size["width"]
        height, width = array.shape[:2]
        if height < crop_height or width < crop_width:  # pad with zeros like transformers' center_crop
            padded = np.zeros((max(height, crop_height), max(width, crop_width), array.shape[2]), dtype=array.dtype)
            top, left = (padded.shape[0] - height) // 2, (padded.shape[1] - width) // 2
            padded[top : top + height, left : left + width] = array
            array, height, width = padded, padded.shape[0], padded.shape[1]
        top = (height - crop_height) // 2
        left = (width - crop_width) // 2
        return array[top : top + crop_height, left : left + crop_width]

    def process_one(self, image: Any, pad_to_square: bool) -> np.ndarray:
        """One image -> float32 [3, crop_h, crop_w]."""
        image = to_pil_rgb(image)
        if pad_to_square:
            image = expand_to_square(image, self.background_color)
        array = np.asarray(self._resize_shortest_edge(image))  # uint8 [H, W, 3]
        array = self._center_crop(array)
        array = (array * self.rescale_factor).astype(np.float32)  # float64 product, then float32, like 4.31
        mean = np.asarray(self.image_mean, dtype=np.float32)
        std = np.asarray(self.image_std, dtype=np.float32)
        array = (array - mean) / std
        return np.ascontiguousarray(array.transpose(2, 0, 1))

    def preprocess(
        self,
        images: Any,
        do_pad_to_square: bool | None = None,
        return_tensors: str | None = None,
        **kwargs: Any,
    ) -> BatchFeature:
        """Process one image or a list of images (PIL, uint8 arrays or tensors) into `pixel_values`."""
        if kwargs:
            unknown = ", ".join(sorted(kwargs))
            raise TypeError(f"LlamaVidImageProcessor got unexpected arguments: {unknown}.")
        pad = self.do_pad_to_square if do_pad_to_square is None else do_pad_to_square
        if hasattr(images, "convert") or (hasattr(images, "ndim") and images.ndim in (2, 3)):
            images = [images]
        arrays = [self.process_one(image, pad) for image in images]
        crop = (3, self.crop_size["height"], self.crop_size["width"])
        pixel_values = np.stack(arrays) if arrays else np.zeros((0, *crop), dtype=np.float32)
        return BatchFeature(data={"pixel_values": pixel_values}, tensor_type=return_tensors)

    def __call__(self, images: Any, **kwargs: Any) -> BatchFeature:
        return self.preprocess(images, **kwargs)
