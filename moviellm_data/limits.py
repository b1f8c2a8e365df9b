"""The bounds of every size a user gives moviellm, checked in one place before anything is written.

Each bound is documented here and in the README, and each check raises :class:`ConfigError` with one sentence. The
command line checks the options as they are parsed (the ``argparse`` types below); the library checks the same
values when its objects are built (:class:`~moviellm_data.sizes.StorySize`, ``GenerateOptions``, the renderers,
:func:`~moviellm_data.video.encode_mp4`), so a Python caller gets the same sentence. Nothing is created on disk
before these checks pass.
"""

from __future__ import annotations

import argparse

from .errors import ConfigError

#: Keyframes in one movie (acts x scenes x shots), one per second: 32,768 is what LLaMA-VID's 65,536-token context
#: holds at two tokens per frame before any text (the reference size, 11 x 11 x 11, is 1,331).
MAX_FRAMES_PER_MOVIE = 32_768
#: Movies in one dataset: ids carry a six-digit index (``m000042_...``) that sorts in generation order.
MAX_MOVIES = 1_000_000
#: Frame width and height in pixels: at least 64 and even (H.264 with 4:2:0 chroma halves both), at most 4,096
#: (H.264 level 5.1; SDXL renders at 1,024).
MIN_FRAME_SIDE = 64
MAX_FRAME_SIDE = 4096
#: H.264 quality (CRF) for 8-bit video: 0 (lossless) to 51 (smallest); 18 is visually lossless for drawn frames.
MIN_CRF, MAX_CRF = 0, 51
#: One theme, in characters (it goes into every prompt of a movie and into the card).
MAX_THEME_CHARS = 300
#: Themes in one run (the recipe and the card list them).
MAX_THEMES = 10_000


def check_story_size(acts: int, scenes_per_act: int, shots_per_scene: int) -> None:
    """Positive whole numbers whose product is at most :data:`MAX_FRAMES_PER_MOVIE`."""
    for name, value in (("acts", acts), ("scenes per act", scenes_per_act), ("shots per scene", shots_per_scene)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{name} must be a positive whole number, got {value!r}.")
    frames = acts * scenes_per_act * shots_per_scene
    if frames > MAX_FRAMES_PER_MOVIE:
        raise ConfigError(f"a {acts}x{scenes_per_act}x{shots_per_scene} movie has {frames:,} frames, more than the "
                          f"{MAX_FRAMES_PER_MOVIE:,} a movie may have (the reference size 11x11x11 has 1,331); "
                          "choose a smaller --size.")


def check_movies(movies: int, name: str = "--movies") -> None:
    """At least 1, at most :data:`MAX_MOVIES` (``name``: how the sentence calls the value)."""
    if not isinstance(movies, int) or isinstance(movies, bool) or movies < 1:
        raise ConfigError(f"{name} must be at least 1, got {movies!r}.".lstrip())
    if movies > MAX_MOVIES:
        raise ConfigError(f"{name} {movies:,} is more than the {MAX_MOVIES:,} movies a dataset may hold; make "
                          "several datasets.".lstrip())


def check_frame_size(width: int, height: int) -> None:
    """Even sides between :data:`MIN_FRAME_SIDE` and :data:`MAX_FRAME_SIDE` pixels."""
    check_frame_side(width, "width")
    check_frame_side(height, "height")


def check_frame_side(value: int, name: str = "") -> None:
    """One side of a frame (``name``: width or height, for the sentence)."""
    what = f"{name} {value!r}".strip()
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"{what} is not a whole number of pixels.")
    if not MIN_FRAME_SIDE <= value <= MAX_FRAME_SIDE or value % 2:
        raise ConfigError(f"{what} is not a frame size moviellm writes: frames must be even sizes of "
                          f"{MIN_FRAME_SIDE} to {MAX_FRAME_SIDE} pixels.")


def check_crf(crf: int, name: str = "--crf") -> None:
    """H.264's CRF range, :data:`MIN_CRF` to :data:`MAX_CRF` (``name``: how the sentence calls the value)."""
    if not isinstance(crf, int) or isinstance(crf, bool) or not MIN_CRF <= crf <= MAX_CRF:
        raise ConfigError(f"{name} must be a whole number from {MIN_CRF} (lossless) to {MAX_CRF} (H.264's range), "
                          f"got {crf!r}.".lstrip())


def check_themes(themes: list[str]) -> None:
    """At most :data:`MAX_THEMES` themes of at most :data:`MAX_THEME_CHARS` characters each."""
    if len(themes) > MAX_THEMES:
        raise ConfigError(f"{len(themes):,} themes are more than the {MAX_THEMES:,} one run may have; split them "
                          "over several datasets.")
    for number, theme in enumerate(themes, start=1):
        if len(theme) > MAX_THEME_CHARS:
            raise ConfigError(f"theme {number} has {len(theme):,} characters, more than the {MAX_THEME_CHARS} a theme "
                              f"may have; shorten it (it starts {theme[:40]!r}).")


# ------------------------------------------------------------------------------- argparse types (the CLI)


def _as_type(check, parse=int):
    """An argparse ``type=`` from a check: the value parsed, then checked; the sentence becomes argparse's error."""

    def convert(text: str):
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        try:
            check(value, "")  # argparse names the option itself ("argument --crf: ...")
        except ConfigError as err:
            raise argparse.ArgumentTypeError(str(err).rstrip(".")) from None
        return value

    return convert


movies_count = _as_type(check_movies)
frame_side = _as_type(check_frame_side)
crf_value = _as_type(check_crf)
