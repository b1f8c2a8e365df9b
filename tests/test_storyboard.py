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


@pytest.mark.parametrize(("width", "height"), [(384, 256), (128, 96), (64, 64), (1024, 576)])
def test_captions_fit_the_frame_and_break_between_phrases(width, height):
    """Issue 12: keyframe captions wrapped mid-phrase ("standing by a / marble plinth") or ran past the frame."""
    from moviellm_data.renderers.storyboard import _OPENERS, ELLIPSIS, _font
    from moviellm_data.writers import MovieRequest, ProceduralWriter

    renderer = StoryboardRenderer(width=width, height=height)
    unit = max(8, height // 20)
    font = _font(unit)
    texts = []
    for seed in range(6):
        script = ProceduralWriter("3x3x4").write(MovieRequest(id="m000000_c", index=0, theme="a love story", seed=seed))
        texts += [shot.action for shot in script.shots()] + [f.subtitle for f in script.timeline if f.subtitle]
    broken_before = 0
    for text in texts:
        lines = renderer.caption_lines(text, unit)
        assert 1 <= len(lines) <= 2
        for line in lines:
            assert font.getlength(line) <= width - unit, (width, line)
        for line in lines[:-1]:
            assert line.split()[-1].lower() not in _OPENERS, (width, lines)
        shown = " ".join(lines)
        if shown.endswith(ELLIPSIS):
            prefix = shown[: -len(ELLIPSIS)].split()
            assert text.split()[: len(prefix)] == prefix and prefix[-1].lower() not in _OPENERS, (text, lines)
        else:
            assert shown == " ".join(text.split()), (text, lines)
        broken_before += len(lines) > 1
    if width <= 128:  # small frames wrap most captions: the checks above saw line breaks
        assert broken_before > len(texts) // 4
