"""Prompts, seeds, presets and the renderer's recipe: no model needed."""

from __future__ import annotations

import json

import pytest

from moviellm_data.errors import ConfigError
from moviellm_data.renderers.diffusion import DiffusionRenderer
from moviellm_data.renderers.presets import PRESETS, REFERENCE_STYLE_SCHEDULE, StyleTraining, get_preset
from moviellm_data.renderers.frame_prompts import frame_prompt, frame_seed, replace_names, style_image_prompts
from moviellm_data.renderers.settings import RenderSettings
from moviellm_data.script import Character, Style


def _character(name: str, lookalike: str, colour: str) -> Character:
    return Character(name=name, role="main", lookalike=lookalike, outfit_colour=colour)


def test_names_become_lookalikes_whole_words_longest_first():
    cast = [_character("Ann", "a tall woman", "red"), _character("Ann Lee", "a short man", "blue"),
            _character("Bo", "an old man", "green")]
    text = replace_names("Ann Lee talks to Ann near Bobby's car, Bo's hat", cast)
    assert text == "a short man in blue talks to a tall woman in red near Bobby's car, an old man in green's hat"


def test_frame_prompt_carries_style_word_and_no_names(tiny_script):
    for shot in tiny_script.shots():
        prompt = frame_prompt(tiny_script, shot, "<romantic-style>")
        assert prompt.startswith("generate an image in <romantic-style> style: ")
        for character in tiny_script.characters:
            assert f" {character.name} " not in f" {prompt} ".replace(",", " ")


def test_frame_seeds_are_stable_and_distinct():
    seeds = [frame_seed("m000001_ab", i) for i in range(50)]
    assert seeds == [frame_seed("m000001_ab", i) for i in range(50)]
    assert len(set(seeds)) == 50
    assert frame_seed("m000002_cd", 0) != seeds[0]
    assert frame_seed("m000001_ab", 0, seed=1) != seeds[0]
    assert all(0 <= s < 2**63 for s in seeds)
    assert [frame_seed("any", i, scheme="dreamframe") for i in range(3)] == [20, 21, 22]
    with pytest.raises(ValueError):
        frame_seed("x", 0, scheme="nope")


def test_style_image_prompts_use_keyword_and_phrases():
    style = Style(keyword="Gothic", phrases=["dark arches", "candle light"], emphasised=["candle light"])
    prompts = style_image_prompts(style, ["a church", "a crypt"], 3)
    assert prompts == [
        "generate an image in Gothic style: a church, candle light, dark arches",
        "generate an image in Gothic style: a crypt, candle light, dark arches",
        "generate an image in Gothic style: a church, candle light, dark arches",
    ]


def test_fast_preset_is_the_reference_recipe():
    reference, fast = get_preset("reference"), get_preset("fast")
    assert fast.recipe() == reference.recipe()
    assert reference.recipe()["steps"] == 40 and reference.refiner_switch == 0.75
    assert (reference.width, reference.height, reference.batch_size, reference.dtype) == (1024, 1024, 1, "float16")
    assert fast.batch_size > 1 and fast.compile
    assert get_preset("draft").recipe() != reference.recipe()
    with pytest.raises(ConfigError, match="unknown render preset 'turbo'"):
        get_preset("turbo")


def test_style_schedule_is_the_reference_and_rescales():
    training = StyleTraining()
    assert training.schedule == REFERENCE_STYLE_SCHEDULE
    assert training.total_steps == 400 and training.gradient_accumulation == 2 and training.flips
    assert training.learning_rate(0) == 1e-3 and training.learning_rate(399) == 3e-4
    assert training.learning_rate(4) == 9e-4
    short = training.with_total_steps(40)
    assert short.total_steps == 40
    assert short.learning_rate(0) == 1e-3 and short.learning_rate(39) == 3e-4
    rates = [short.learning_rate(i) for i in range(40)]
    assert rates == sorted(rates, reverse=True)
    assert training.with_total_steps(3).total_steps == 3


def test_describe_is_deterministic_and_leaves_out_speed_settings(tmp_path):
    a = DiffusionRenderer(RenderSettings("some/model", refiner="some/refiner", batch_size=2, compile=False, device="cpu",
                                         style_cache=tmp_path / "a"))
    b = DiffusionRenderer(RenderSettings("some/model", refiner="some/refiner", batch_size=16, compile=True, device="cuda",
                                         offload="model", style_cache=tmp_path / "b"))
    assert a.describe() == b.describe()
    json.dumps(a.describe())  # plain data only
    assert str(tmp_path) not in json.dumps(a.describe())
    assert DiffusionRenderer(RenderSettings("some/model", refiner="some/refiner", steps=30)).describe() != a.describe()
    assert a.describe()["style"]["schedule"][0] == [4, 1e-3]
    assert a.describe()["refiner_switch"] == 0.75


def test_refiner_choice():
    assert DiffusionRenderer(RenderSettings("m")).refiner == "stabilityai/stable-diffusion-xl-refiner-1.0"
    base_only = DiffusionRenderer(RenderSettings("m", refiner="none"))
    assert base_only.refiner is None and base_only.refiner_switch is None
    assert DiffusionRenderer(RenderSettings("m", preset="draft")).refiner is None
    assert DiffusionRenderer(RenderSettings("m", preset="draft")).describe()["steps"] == 20


@pytest.mark.parametrize("kwargs, message", [
    (dict(width=100), "multiples of 8"),
    (dict(steps=0), "--steps"),
    (dict(dtype="float8"), "--dtype must be one of"),
    (dict(offload="disk"), "--offload must be one of"),
    (dict(style="maybe"), "--style must be one of"),
    (dict(frame_seeds="random"), "--frame-seeds must be one of"),
])
def test_bad_settings_are_one_sentence(kwargs, message):
    with pytest.raises(ConfigError, match=message) as info:
        RenderSettings("m", **kwargs)
    assert "\n" not in str(info.value)


def test_presets_are_named_consistently():
    for name, preset in PRESETS.items():
        assert preset.name == name and preset.description


def test_render_settings_take_the_preset_and_named_overrides():
    draft = RenderSettings("m", preset="draft", steps=12)
    assert draft.preset is PRESETS["draft"] and (draft.steps, draft.width, draft.batch_size) == (12, 768, 8)
    assert draft.style_training == PRESETS["draft"].style and draft.attention == "default"
    assert RenderSettings("m", style_steps=10, style_images=3).style_training.total_steps == 10
    assert RenderSettings("m", style_images=3).style_training.images == 3
    fast = RenderSettings("m")
    assert fast.attention == "auto" and fast.compiles_on("cuda") and not fast.compiles_on("cpu")
    assert RenderSettings("m", compile=True).compiles_on("cpu") and not RenderSettings("m", compile=False).compiles_on("cuda")
    assert fast.resolve_refiner() == ("stabilityai/stable-diffusion-xl-refiner-1.0", 0.75)
    assert fast.resolve_refiner(pipeline_given=True) == (None, None)
    assert fast.resolve_refiner(pipeline_given=True, refiner_given=True) == ("refiner", 0.75)
    with pytest.raises(TypeError, match="RenderSettings"):
        DiffusionRenderer("m")  # the model and options go into a RenderSettings


def test_the_command_line_builds_the_same_settings_and_recipe(tmp_path):
    from moviellm_data.cli import build_parser
    from moviellm_data.renderers.diffusion_cli import settings_from_args
    from moviellm_data.renderers.settings import IPAdapterSettings

    args = build_parser(["generate"]).parse_args([
        "generate", "--movies", "1", "--out", str(tmp_path), "--renderer", "diffusers", "--image-model", "m",
        "--preset", "draft", "--steps", "12", "--width", "512", "--height", "512", "--render-seed", "3",
        "--ip-adapter", "h94/IP-Adapter", "--ip-adapter-weight", "ip.safetensors", "--ip-adapter-scale", "0.5"])
    expected = RenderSettings("m", preset="draft", steps=12, width=512, height=512, seed=3,
                              ip_adapter=IPAdapterSettings("h94/IP-Adapter", weight_name="ip.safetensors", scale=0.5))
    assert settings_from_args(args) == expected
    assert DiffusionRenderer(settings_from_args(args)).describe() == DiffusionRenderer(expected).describe()
