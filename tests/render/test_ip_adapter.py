"""Character reference portraits through diffusers' IP-Adapter support, with tiny adapter weights on disk."""

from __future__ import annotations

import numpy as np
import pytest

from moviellm_data.renderers.settings import IPAdapterSettings


def test_character_portraits_condition_their_frames(make_renderer, short_script, tiny_ip_adapter):
    def render(scale: float):
        renderer = make_renderer(ip_adapter=IPAdapterSettings(str(tiny_ip_adapter), weight_name="ip-adapter.safetensors",
                                                              scale=scale))
        frames = list(renderer.render_frames(short_script))
        return renderer, frames

    renderer, with_portraits = render(1.0)
    _, without = render(0.0)
    assert len(with_portraits) == short_script.num_frames
    assert renderer.pipeline.image_encoder is not None
    assert renderer.describe()["ip_adapter"]["scale"] == 1.0 and renderer.references.portraits == {}
    for shot, a, b in zip(short_script.shots(), with_portraits, without):
        if shot.characters:
            assert np.abs(a.astype(int) - b.astype(int)).mean() > 0.5

    # Frames of the same character share one portrait; frames are deterministic.
    references = renderer.references.for_frames(short_script, short_script.shots(), short_script.style.keyword)
    by_character = {}
    for shot, reference in zip(short_script.shots(), references):
        if shot.characters:
            by_character.setdefault(shot.characters[0], reference)
            assert reference is by_character[shot.characters[0]]
    _, again = render(1.0)
    if renderer._exec_device.type == "cpu":
        assert all(np.array_equal(a, b) for a, b in zip(with_portraits, again))
    else:  # cuDNN's autotuning may pick other kernels in another process state: the same frames up to rounding
        assert all(np.abs(a.astype(int) - b.astype(int)).max() <= 2 for a, b in zip(with_portraits, again))


def test_missing_adapter_weights_are_one_sentence(make_renderer, tmp_path):
    from moviellm_data.errors import ConfigError

    with pytest.raises(ConfigError, match="cannot load the IP-Adapter") as info:
        make_renderer(style="none", ip_adapter=IPAdapterSettings(str(tmp_path), weight_name="missing.safetensors")).load()
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="--ip-adapter-weight"):
        make_renderer(style="none", ip_adapter=IPAdapterSettings(str(tmp_path))).load()
