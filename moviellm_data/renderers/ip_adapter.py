"""Character consistency through an IP-Adapter: one reference portrait per character conditions its frames.

Each character that appears in a movie gets a portrait, rendered once per movie from its lookalike
description in the movie's style; the frames a character appears in (its first character, when several
are in the frame) are conditioned on that portrait's image embeds, frames with nobody on neutral embeds
(the negative embeds of a blank image). The portraits themselves ship with the movie (:mod:`.portraits`).
"""

from __future__ import annotations

import logging

from ..errors import ConfigError
from ..script import MovieScript
from .frame_prompts import portrait_prompt, stable_seed
from .settings import IPAdapterSettings
from .speed import short_error

logger = logging.getLogger(__name__)


def load_ip_adapter(base, settings: IPAdapterSettings) -> None:
    """Load the adapter weights and image encoder into the SDXL pipeline ``base``; one sentence when it fails."""
    from diffusers import StableDiffusionXLPipeline

    if not hasattr(base, "load_ip_adapter") or not isinstance(base, StableDiffusionXLPipeline):
        raise ConfigError(f"--ip-adapter needs an SDXL pipeline with IP-Adapter support, not {type(base).__name__}.")
    try:
        base.load_ip_adapter(settings.weights, subfolder=settings.subfolder or "", weight_name=settings.weight_name,
                             image_encoder_folder=settings.image_encoder)
    except Exception as err:
        logger.debug("loading the IP-Adapter failed", exc_info=True)
        raise ConfigError(
            f"cannot load the IP-Adapter {settings.weights!r} ({short_error(err)}); check --ip-adapter, "
            "--ip-adapter-subfolder and --ip-adapter-weight."
        ) from None
    base.set_ip_adapter_scale(settings.scale)


class CharacterReferences:
    """The image embeds that condition each frame of a movie, for the renderer that draws it.

    Args:
        renderer: the loaded :class:`~moviellm_data.renderers.diffusion.DiffusionRenderer` (its pipeline, settings
            and ``render_prompts`` draw the portraits).
    """

    def __init__(self, renderer) -> None:
        self.renderer = renderer
        self.portraits: dict[str, dict] = {}  # movie id -> {character name: (positive, negative) image embeds}
        self.images: dict[str, dict] = {}  # movie id -> {character name: uint8 portrait}, until shipped
        self._neutral = None

    def encode(self, image):
        """(positive, negative) image embeds of one reference image for the loaded adapter."""
        from diffusers.models.embeddings import ImageProjection

        base = self.renderer.pipeline
        projection = base.unet.encoder_hid_proj.image_projection_layers[0]
        hidden = not isinstance(projection, ImageProjection)
        positive, negative = base.encode_image(image, base._execution_device, 1, hidden)
        return positive, negative

    def neutral(self):
        """Embeds that carry no reference (the negative embeds of a blank image), for frames with nobody."""
        if self._neutral is None:
            from PIL import Image

            settings = self.renderer.settings
            _, negative = self.encode(Image.new("RGB", (settings.width, settings.height)))
            self._neutral = (negative, negative)
        return self._neutral

    def for_frames(self, script: MovieScript, shots, style_word: str) -> list:
        """Per frame: the (positive, negative) embeds of the portrait of the frame's first character."""
        from PIL import Image

        neutral = self.neutral()
        portraits = self.portraits.get(script.id)
        if portraits is None:
            portraits, images = {}, {}
            settings = self.renderer.settings
            characters = [c for c in script.characters if any(c.name in shot.characters for shot in shots)]
            prompts = [portrait_prompt(c, style_word) for c in characters]
            for start in range(0, len(prompts), settings.batch_size):
                chunk = characters[start:start + settings.batch_size]
                seeds = [stable_seed("moviellm-portrait", settings.seed, script.id, c.name) for c in chunk]
                drawn = self.renderer.render_prompts(prompts[start:start + settings.batch_size], seeds)
                for character, image in zip(chunk, drawn):
                    portraits[character.name] = self.encode(Image.fromarray(image))
                    images[character.name] = image
            self.portraits[script.id] = portraits
            self.images[script.id] = images
            while len(self.images) > 8:  # portraits nobody took (rendering outside a dataset job): keep a few
                self.images.pop(next(iter(self.images)))
        return [portraits[shot.characters[0]] if shot.characters else neutral for shot in shots]

    def forget(self, movie_id: str) -> None:
        """Drop a finished movie's portrait embeds (its portrait images wait for :meth:`take_images`)."""
        self.portraits.pop(movie_id, None)

    def take_images(self, movie_id: str) -> dict:
        """The movie's portraits as uint8 images by character name (once: they are dropped here)."""
        return self.images.pop(movie_id, {})

    @staticmethod
    def batch_embeds(per_frame, guided: bool = True) -> list:
        """``ip_adapter_image_embeds`` for a batch: [negatives of every frame; positives of every frame] when the
        pipeline runs classifier-free guidance (``guided``), the positives alone otherwise."""
        import torch

        positives = torch.cat([pos[None] for pos, _ in per_frame])
        if not guided:
            return [positives]
        negatives = torch.cat([neg[None] for _, neg in per_frame])
        return [torch.cat([negatives, positives])]
