"""Movie sizes: how many acts, scenes per act and shots per scene a script has."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import ConfigError
from .limits import check_story_size


@dataclass(frozen=True)
class StorySize:
    """Acts x scenes per act x shots per scene; one shot is one keyframe (one second at 1 fps)."""

    acts: int
    scenes_per_act: int
    shots_per_scene: int

    def __post_init__(self) -> None:
        check_story_size(self.acts, self.scenes_per_act, self.shots_per_scene)  # bounds: moviellm_data.limits

    @property
    def frames(self) -> int:
        return self.acts * self.scenes_per_act * self.shots_per_scene

    def __str__(self) -> str:
        return f"{self.acts}x{self.scenes_per_act}x{self.shots_per_scene}"


SIZE_PRESETS: dict[str, StorySize] = {
    "tiny": StorySize(2, 2, 3),
    "small": StorySize(3, 3, 5),
    # The MovieLLM reference: 11 substories x 11 tinystories x 11 frames = 1,331 keyframes.
    "reference": StorySize(11, 11, 11),
}


def parse_size(value: str | StorySize) -> StorySize:
    """Accept a preset name (tiny, small, reference) or an explicit 'ACTSxSCENESxSHOTS' such as '4x3x6'."""
    if isinstance(value, StorySize):
        return value
    key = str(value).strip().lower()
    if key in SIZE_PRESETS:
        return SIZE_PRESETS[key]
    match = re.fullmatch(r"(\d{1,18})x(\d{1,18})x(\d{1,18})", key)
    if match:
        return StorySize(*(int(g) for g in match.groups()))
    presets = ", ".join(SIZE_PRESETS)
    raise ConfigError(f"unknown movie size {value!r}: use one of {presets} or ACTSxSCENESxSHOTS such as 4x3x6.")


def story_size(text: str) -> StorySize:
    """``--size``'s argparse type: :func:`parse_size`, its sentence as argparse's error (bounds: :mod:`.limits`)."""
    import argparse

    try:
        return parse_size(text)
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err).rstrip(".")) from None
