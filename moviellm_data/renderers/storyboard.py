"""The offline renderer: deterministic storyboard frames drawn with Pillow, no model and no GPU.

Each frame shows the setting (a backdrop whose colours and shapes follow from the location's name, with
the name written on it), every character in the shot as a figure in its outfit colour with its name,
the action as a caption and the spoken line as a subtitle band, so a person (or a test) can check that
frame ``t`` shows shot ``t``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..limits import check_frame_size
from ..script import MovieScript, RendererProvenance, Shot
from .base import Renderer

COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (200, 40, 40), "blue": (40, 80, 200), "green": (40, 150, 60), "yellow": (230, 200, 40),
    "purple": (130, 60, 170), "orange": (235, 130, 30), "white": (245, 245, 245), "black": (25, 25, 25),
    "teal": (20, 140, 140), "brown": (120, 75, 40), "pink": (235, 120, 170), "grey": (128, 128, 128),
    "gray": (128, 128, 128), "gold": (212, 175, 55), "silver": (190, 190, 200), "navy": (20, 30, 90),
    "beige": (220, 200, 160), "maroon": (110, 20, 30), "cyan": (40, 200, 220), "violet": (150, 90, 200),
}
SKIN = (224, 186, 150)


def colour_of(word: str) -> tuple[int, int, int]:
    """RGB of a colour word; unknown words get a stable colour from their hash."""
    key = word.strip().lower()
    if key in COLOUR_RGB:
        return COLOUR_RGB[key]
    digest = hashlib.sha256(key.encode()).digest()
    return digest[0], digest[1], digest[2]


@lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


#: Words that open a phrase: a line break never comes right after them.
_OPENERS = frozenset({"a", "an", "the", "of", "by", "at", "to", "in", "on", "with", "from", "into", "beside",
                      "through", "for", "and", "or", "while", "is", "are", "his", "her", "their", "my", "your"})
ELLIPSIS = "..."  # the bundled font has no U+2026


def wrap_to_width(text: str, font: ImageFont.ImageFont, width: float, max_lines: int) -> list[str]:
    """Greedy word wrap to ``width`` pixels of ``font``, breaking between phrases, ellipsis when it does not fit."""
    lines: list[list[str]] = []
    current: list[str] = []
    for word in text.split():
        if current and font.getlength(" ".join([*current, word])) > width:
            cut = _phrase_break(current)
            lines.append(current[:cut])
            current = [*current[cut:], word]
        else:
            current.append(word)
    if current:
        lines.append(current)
    if len(lines) > max_lines:
        last = lines[max_lines - 1] + [w for line in lines[max_lines:] for w in line]
        lines = lines[: max_lines - 1] + [_ellipsized(last, font, width)]
    return [" ".join(line) for line in lines]


def _phrase_break(words: list[str]) -> int:
    """Where to end a full line: before its last phrase ("by a striped ...") when that leaves at least half the
    words on it, and never right after a phrase opener."""
    openers = [i for i, word in enumerate(words) if word.lower() in _OPENERS and i > 0]
    if not openers:
        return len(words)
    start = openers[-1]
    while start - 1 in openers:  # the whole run of openers ("by a") goes with its phrase
        start -= 1
    trailing = openers[-1] == len(words) - 1  # the line would end on an opener: break before it anyway
    return start if start * 2 >= len(words) or trailing else len(words)


def _ellipsized(words: list[str], font: ImageFont.ImageFont, width: float) -> list[str]:
    """The words that fit ``width`` with an ellipsis after them, cut at a phrase boundary: before the last phrase
    that does not fit whole ("standing by a striped..." becomes "standing...")."""
    kept = list(words)
    while kept and font.getlength(" ".join(kept) + ELLIPSIS) > width:
        kept.pop()
    if len(kept) < len(words):
        openers = [i for i, word in enumerate(kept) if word.lower() in _OPENERS and i > 0]
        if openers:
            start = openers[-1]
            while start - 1 in openers:  # the whole run of openers ("by a") goes with its phrase
                start -= 1
            kept = kept[:start]
    while kept and kept[-1].lower() in _OPENERS:
        kept.pop()
    return [*kept[:-1], kept[-1] + ELLIPSIS] if kept else [ELLIPSIS]


class StoryboardRenderer(Renderer):
    """Draws storyboard keyframes.

    Args:
        width, height: frame size in pixels: even (H.264 with 4:2:0 chroma needs it), 64 to 4,096
            (:mod:`moviellm_data.limits`).
    """

    name = "storyboard"

    def __init__(self, width: int = 384, height: int = 256) -> None:
        check_frame_size(width, height)  # one sentence (ConfigError) for sizes no mp4 of ours can hold
        self.width = width
        self.height = height

    def provenance(self, script: MovieScript) -> RendererProvenance:
        return RendererProvenance(name=self.name, model="storyboard-v1", width=self.width, height=self.height)

    def render_frames(self, script: MovieScript) -> Iterator[np.ndarray]:
        for frame, shot in zip(script.timeline, script.shots(), strict=True):
            yield np.asarray(self.draw(script, shot, frame.act, frame.scene, frame.shot, frame.subtitle))

    def draw(self, script: MovieScript, shot: Shot, act: int, scene: int, index: int, subtitle: str | None) -> Image.Image:
        """One frame as a PIL image."""
        w, h = self.width, self.height
        unit = max(8, h // 20)
        image = Image.new("RGB", (w, h))
        draw = ImageDraw.Draw(image)
        self._backdrop(draw, shot.location)
        draw.text((unit // 2, unit // 3), shot.location.upper(), fill=(20, 20, 20), font=_font(unit))
        tag = f"A{act + 1} S{scene + 1} #{index + 1}"
        draw.text((w - unit // 2, unit // 3), tag, fill=(20, 20, 20), font=_font(unit), anchor="ra")
        self._figures(draw, script, shot, unit)
        band_top = self._subtitle(draw, subtitle, unit) if subtitle else h
        caption_top = int(h * 0.70)
        # Small frames: the subtitle wins over the caption, which gets the lines left above the band (at most 2).
        room = min(2, max(1, (band_top - caption_top) // (unit + 2)))
        for i, line in enumerate(self.caption_lines(shot.action, unit, max_lines=room)):
            draw.text((w // 2, caption_top + i * (unit + 2)), line, fill=(15, 15, 15), font=_font(unit), anchor="ma")
        return image

    def caption_lines(self, text: str, unit: int, max_lines: int = 2) -> list[str]:
        """``text`` in at most ``max_lines`` lines that fit the frame, measured with the font that draws them.

        A line never ends on a word that belongs to the next one ("standing by a / marble plinth" becomes "standing
        by / a marble plinth"), and a text too long for the lines ends with an ellipsis at a word boundary instead of
        being cut off or running past the frame's edge.
        """
        return wrap_to_width(text, _font(unit), self.width - unit, max_lines)

    # --------------------------------------------------------------------------------------- pieces

    def _backdrop(self, draw: ImageDraw.ImageDraw, location: str) -> None:
        """Sky/wall and ground colours plus a few shapes, all fixed by the location's name."""
        w, h = self.width, self.height
        seed = hashlib.sha256(location.encode()).digest()
        sky = tuple(150 + b % 100 for b in seed[0:3])
        ground = tuple(60 + b % 110 for b in seed[3:6])
        horizon = int(h * (0.45 + (seed[6] % 15) / 100))
        draw.rectangle([0, 0, w, horizon], fill=sky)
        draw.rectangle([0, horizon, w, h], fill=ground)
        for i in range(3 + seed[7] % 3):
            x = seed[8 + i] * w // 256
            bw = w // 10 + seed[12 + i] % (w // 8)
            bh = h // 8 + seed[16 + i] % (h // 4)
            shade = tuple(max(0, c - 40 - 10 * i) for c in sky)
            if seed[20 + i] % 2:
                draw.rectangle([x, horizon - bh, x + bw, horizon], fill=shade)
            else:
                draw.ellipse([x, horizon - bh, x + bw, horizon + bh // 4], fill=shade)

    def _figures(self, draw: ImageDraw.ImageDraw, script: MovieScript, shot: Shot, unit: int) -> None:
        w, h = self.width, self.height
        names = shot.characters
        if not names:
            return
        slot = w / (len(names) + 1)
        body_w = max(unit, int(min(slot * 0.45, w * 0.12)))
        body_h = int(h * 0.24)
        head = max(4, body_w // 2)
        feet = int(h * 0.66)
        for i, name in enumerate(names):
            cx = int(slot * (i + 1))
            outfit = colour_of(script.character(name).outfit_colour)
            top = feet - body_h
            draw.rectangle([cx - body_w // 2, top, cx + body_w // 2, feet], fill=outfit, outline=(0, 0, 0))
            draw.ellipse([cx - head // 2, top - head - 2, cx + head // 2, top - 2], fill=SKIN, outline=(0, 0, 0))
            label_y = top - head - unit - 4
            draw.text((cx, label_y), name, fill=(0, 0, 0), font=_font(unit), anchor="ma",
                      stroke_width=1, stroke_fill=(255, 255, 255))

    def _subtitle(self, draw: ImageDraw.ImageDraw, text: str, unit: int) -> int:
        """Draw the subtitle band at the bottom; return its top row."""
        w, h = self.width, self.height
        lines = self.caption_lines(text, unit)
        band_top = h - (len(lines) * (unit + 3) + unit // 2)
        draw.rectangle([0, band_top, w, h], fill=(0, 0, 0))
        for i, line in enumerate(lines):
            draw.text((w // 2, band_top + unit // 4 + i * (unit + 3)), line, fill=(255, 255, 255),
                      font=_font(unit), anchor="ma")
        return band_top
