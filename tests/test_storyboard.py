"""The offline renderer draws what each shot says, deterministically."""

from __future__ import annotations

import numpy as np
import pytest

from moviellm_data.renderers import StoryboardRenderer
from moviellm_data.renderers.storyboard import colour_of
from moviellm_data.writers import MovieRequest, ProceduralWriter


@pytest.fixture(scope="module")
def script():
    return ProceduralWriter("tiny").write(MovieRequest(id="m0_sb", index=0, theme="a bank heist", seed=11))


def test_one_frame_per_shot_at_the_requested_size(script):
    frames = list(StoryboardRenderer(width=320, height=240).render_frames(script))
    assert len(frames) == script.num_frames
    assert all(f.shape == (240, 320, 3) and f.dtype == np.uint8 for f in frames)


def test_rendering_is_deterministic_and_shots_differ(script):
    a = list(StoryboardRenderer().render_frames(script))
    b = list(StoryboardRenderer().render_frames(script))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    distinct = {f.tobytes() for f in a}
    assert len(distinct) == len(a)


def test_subtitle_band_appears_exactly_on_frames_with_a_line(script):
    frames = list(StoryboardRenderer().render_frames(script))
    for frame, timeline in zip(frames, script.timeline):
        bottom = frame[-3:, :, :]
        has_band = bool((bottom.max(axis=2) < 10).mean() > 0.9)
        assert has_band == (timeline.subtitle is not None)


def test_characters_wear_their_outfit_colour(script):
    renderer = StoryboardRenderer()
    for frame, shot in zip(renderer.render_frames(script), script.shots()):
        pixels = frame.reshape(-1, 3).astype(int)
        for name in shot.characters:
            colour = np.array(colour_of(script.character(name).outfit_colour))
            assert (np.abs(pixels - colour).sum(axis=1) == 0).sum() > 100, (name, shot.prompt)


def test_odd_or_tiny_sizes_are_refused():
    with pytest.raises(ValueError, match="even sizes"):
        StoryboardRenderer(width=321, height=240)
    with pytest.raises(ValueError, match="even sizes of 64 to 4096"):
        StoryboardRenderer(width=32, height=32)
