"""Who draws the keyframes: the offline :class:`StoryboardRenderer`, and diffusion renderers."""

from .base import Renderer
from .storyboard import StoryboardRenderer

__all__ = ["Renderer", "StoryboardRenderer"]
