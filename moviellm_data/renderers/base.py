"""What every renderer provides: one RGB keyframe per shot, in timeline order."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator

import numpy as np

from ..script import MovieScript, RendererProvenance


class Renderer(ABC):
    """Draws the keyframes of a :class:`MovieScript`.

    Frames are yielded one at a time (uint8 arrays [H, W, 3]) so that a 1,331-frame movie at 1024 x 1024
    is encoded as it is drawn instead of being held in memory whole.
    """

    name: str = "renderer"
    width: int
    height: int

    @abstractmethod
    def render_frames(self, script: MovieScript) -> Iterator[np.ndarray]:
        """Yield ``script.num_frames`` frames, frame ``i`` showing shot ``i``."""

    def style_embedding(self, script: MovieScript) -> bytes | None:
        """The movie's style embedding as safetensors bytes, or None when the renderer learns none."""
        return None

    def portraits(self, script: MovieScript) -> bytes | None:
        """After :meth:`render_frames`: the character portraits the frames were conditioned on (safetensors bytes,
        :mod:`~moviellm_data.renderers.portraits`), or None when the renderer uses none."""
        return None

    @abstractmethod
    def provenance(self, script: MovieScript) -> RendererProvenance:
        """What made this movie's frames (model ids, settings, seeds)."""

    def describe(self) -> dict:
        """The renderer's settings, for the dataset recipe (``pipeline.yaml``)."""
        return {"name": self.name, "width": self.width, "height": self.height}
