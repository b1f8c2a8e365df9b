"""The solver and few-step presets: samplers, distilled weights (LoRA and UNet) on the tiny SDXL, and what they record."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from moviellm_data.errors import ConfigError
from moviellm_data.renderers.settings import DistilledWeights
from moviellm_data.renderers.settings import IPAdapterSettings, RenderSettings


def _diff(a, b) -> tuple[int, float]:
    """(largest, mean) absolute difference in 0-255 levels between two lists of frames."""
    d = np.abs(np.stack(a).astype(int) - np.stack(b).astype(int))
    return int(d.max()), float(d.mean())


@pytest.fixture(scope="module")
def tiny_distilled(tmp_path_factory, tiny_sdxl):
    """Distilled weights for the tiny SDXL, saved the ways they are published.

    ``lora``: a LoRA made with peft on the tiny UNet and saved by diffusers' ``save_lora_weights``; ``unet_folder`` and
    ``unet_file``: the same LoRA merged into the UNet, as a diffusers UNet folder and as one safetensors state dict.
    """
    import torch
    from diffusers import AutoPipelineForText2Image, StableDiffusionXLPipeline, UNet2DConditionModel
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("distilled")
    unet = UNet2DConditionModel.from_pretrained(str(tiny_sdxl[0]), subfolder="unet")
    torch.manual_seed(7)
    # Random (not zero) up-projections at a large alpha/r: a LoRA that visibly changes the frames.
    unet.add_adapter(LoraConfig(r=4, lora_alpha=32, target_modules=["to_q", "to_k", "to_v", "to_out.0", "proj_in",
                                                                    "proj_out", "ff.net.2"], init_lora_weights=False))
    StableDiffusionXLPipeline.save_lora_weights(
        str(root / "lora"), unet_lora_layers=convert_state_dict_to_diffusers(get_peft_model_state_dict(unet)))
    merged = AutoPipelineForText2Image.from_pretrained(str(tiny_sdxl[0]))
    merged.load_lora_weights(str(root / "lora"))
    merged.fuse_lora()
    merged.unload_lora_weights()
    merged.unet.save_pretrained(str(root / "unet-folder"))
    save_file({k: v.contiguous() for k, v in merged.unet.state_dict().items()}, str(root / "unet.safetensors"))
    return {"lora": root / "lora", "unet_folder": root / "unet-folder", "unet_file": root / "unet.safetensors"}


def _few_step(make_renderer, weights, kind="lightning", **overrides):
    kwargs = dict(preset="few-step", refiner="none", steps=None, distilled=DistilledWeights(str(weights), kind),
                  style="none")
    kwargs.update(overrides)
    return make_renderer(**kwargs)


PROMPTS = [f"generate an image in Romantic style: at the park, a tall man in red, {m}" for m in ("smiling", "crying")]


def test_distilled_lora_and_unet_weights_load_and_change_the_image(make_renderer, tiny_distilled):
    lora = _few_step(make_renderer, tiny_distilled["lora"])
    frames = lora.render_prompts(PROMPTS, [3, 4])
    assert lora.distilled_format == "lora"
    # The adapter is fused and unloaded: a plain UNet (compiles, fuses its projections) with the LoRA in its weights.
    assert not any("lora" in type(m).__name__.lower() for m in lora.pipeline.unet.modules())
    assert type(lora.pipeline.scheduler).__name__ == "EulerDiscreteScheduler"
    assert lora.pipeline.scheduler.config.timestep_spacing == "trailing" and lora.settings.guidance_scale == 0.0

    # The same weights merged into whole UNet weights (a folder, a state dict) give the same frames.
    for key in ("unet_folder", "unet_file"):
        unet = _few_step(make_renderer, tiny_distilled[key])
        assert _diff(unet.render_prompts(PROMPTS, [3, 4]), frames)[0] <= 1
        assert unet.distilled_format == "unet"

    # The same sampler, steps and guidance without the weights: other frames, so the weights were applied.
    plain = make_renderer(preset="draft", refiner="none", steps=4, guidance_scale=0.0, sampler="euler-trailing",
                          style="none")
    assert _diff(plain.render_prompts(PROMPTS, [3, 4]), frames)[1] > 2
    # And again from scratch: the same frames (seeded, deterministic).
    again = _few_step(make_renderer, tiny_distilled["lora"]).render_prompts(PROMPTS, [3, 4])
    assert all(np.array_equal(a, b) for a, b in zip(frames, again))


def test_each_kind_configures_the_sampler_its_authors_prescribe(make_renderer, tiny_distilled):
    expected = {"lightning": ("EulerDiscreteScheduler", 4, 0.0), "hyper": ("DDIMScheduler", 8, 0.0),
                "dmd2": ("LCMScheduler", 4, 0.0), "lcm": ("LCMScheduler", 4, 1.0)}
    for kind, (scheduler, steps, guidance) in expected.items():
        renderer = _few_step(make_renderer, tiny_distilled["lora"], kind=kind)
        settings = renderer.settings
        assert (settings.steps, settings.guidance_scale, settings.refiner) == (steps, guidance, "none")
        frame = renderer.render_prompts(PROMPTS[:1], [5])[0]
        assert frame.shape == (64, 64, 3)
        assert type(renderer.pipeline.scheduler).__name__ == scheduler
        if kind == "dmd2":  # DMD2's own timesteps, not the LCM sampler's spacing
            assert renderer.pipeline.scheduler.timesteps.tolist() == [999, 749, 499, 249]
            assert renderer.describe()["timesteps"] == [999, 749, 499, 249]
        if kind == "hyper":
            assert renderer.pipeline.scheduler.config.timestep_spacing == "trailing"
            assert renderer.pipeline.scheduler.config.clip_sample is False
    # Another step count than the kind's drops its fixed timesteps (they exist for 4 steps only).
    assert RenderSettings("m", preset="few-step", steps=2, distilled=DistilledWeights("x/y", "dmd2")).timesteps is None
    # A named override still wins over the kind's recipe.
    assert RenderSettings("m", preset="few-step", guidance_scale=1.5, sampler="lcm",
                          distilled=DistilledWeights("x/y", "lightning")).sampler == "lcm"


def test_solver_preset_renders_deterministically_with_the_refiner_split(make_renderer, short_script):
    solver = make_renderer(preset="solver", steps=6, style="none")
    frames = list(solver.render_frames(short_script))
    again = list(make_renderer(preset="solver", steps=6, style="none").render_frames(short_script))
    assert all(np.array_equal(a, b) for a, b in zip(frames, again))
    assert type(solver.pipeline.scheduler).__name__ == "DPMSolverMultistepScheduler"
    assert solver.pipeline.scheduler.config.algorithm_type == "dpmsolver++"
    assert type(solver.refiner_pipeline.scheduler).__name__ == "DPMSolverMultistepScheduler"
    assert solver.refiner_switch == 0.75 and solver.describe()["sampler"] == "dpmsolver++"
    provenance = solver.provenance(short_script)
    assert provenance.scheduler == "DPMSolverMultistepScheduler" and provenance.sampler == "dpmsolver++"
    # Batching still does not matter, and the sampler is part of the image: Euler gives other frames.
    one_by_one = list(make_renderer(preset="solver", steps=6, style="none", batch_size=1).render_frames(short_script))
    assert _diff(one_by_one, frames)[0] <= 2
    euler = list(make_renderer(preset="fast", steps=6, style="none").render_frames(short_script))
    assert _diff(euler, frames)[1] > 1
    # The classic presets keep their recipe (and so can continue datasets made before samplers existed).
    assert "sampler" not in make_renderer(preset="fast").describe()


def test_pipelines_handed_in_keep_their_scheduler(tiny_sdxl, tiny_distilled):
    from diffusers import AutoPipelineForText2Image

    from moviellm_data.renderers.diffusion import DiffusionRenderer

    base = AutoPipelineForText2Image.from_pretrained(str(tiny_sdxl[0]))
    renderer = DiffusionRenderer(RenderSettings(preset="few-step", distilled=DistilledWeights(str(tiny_distilled["unet_folder"]), "dmd2"),
                                                width=64, height=64, dtype="float32", vae_dtype="float32", style="none"),
                                 pipeline=base)
    renderer.render_prompts(PROMPTS[:1], [1])
    assert type(base.scheduler).__name__ == "EulerDiscreteScheduler"
    assert type(renderer.pipeline.scheduler).__name__ == "LCMScheduler"
    assert renderer.pipeline.unet is not base.unet  # whole UNet weights replaced our copy's UNet, not the caller's


def test_few_step_movies_keep_style_token_and_portraits_and_record_the_recipe(make_renderer, tiny_distilled,
                                                                               tiny_ip_adapter, tmp_path):
    import torch
    from datasets import Video, load_dataset

    from moviellm_data.features import movie_features
    from moviellm_data.pipeline import GenerateOptions, generate
    from moviellm_data.renderers.portraits import read_portraits
    from moviellm_data.renderers.style import install_style_embedding, read_style_embedding, style_token
    from moviellm_data.shards import iter_tar_samples, read_movies
    from moviellm_data.writers.procedural import ProceduralWriter

    ip = IPAdapterSettings(str(tiny_ip_adapter), weight_name="ip-adapter.safetensors", scale=1.0)
    renderer = _few_step(make_renderer, tiny_distilled["lora"], kind="dmd2", style="train", ip_adapter=ip)
    out = tmp_path / "movies"
    result = generate(GenerateOptions(out=out, movies=1, seed=2), ProceduralWriter("1x2x3"), renderer, progress=False)
    assert result.written == 1

    recipe = yaml.safe_load((out / "pipeline.yaml").read_text())["recipe"]["renderer"]
    assert recipe["preset"] == "few-step" and recipe["steps"] == 4 and recipe["guidance_scale"] == 0.0
    assert recipe["sampler"] == "lcm" and recipe["timesteps"] == [999, 749, 499, 249]
    assert recipe["distilled"]["kind"] == "dmd2" and recipe["distilled"]["weights"] == str(tiny_distilled["lora"])
    [(script, frames)] = list(read_movies(out))
    provenance = script.provenance.renderer
    assert (provenance.preset, provenance.scheduler, provenance.sampler) == ("few-step", "LCMScheduler", "lcm")
    assert provenance.timesteps == [999, 749, 499, 249] and provenance.distilled_kind == "dmd2"
    assert provenance.distilled_weights == str(tiny_distilled["lora"]) and frames.shape == (6, 64, 64, 3)

    # The learned style token (the shipped vectors) is installed in both text encoders, and the frames follow it.
    [(_, members)] = list(iter_tar_samples(next(out.glob("*.tar"))))
    learned = read_style_embedding(members["style.safetensors"])
    token = style_token(script.style.keyword)
    pipe = renderer.pipeline
    for key, encoder, tokenizer in (("clip_l", pipe.text_encoder, pipe.tokenizer),
                                    ("clip_g", pipe.text_encoder_2, pipe.tokenizer_2)):
        row = encoder.get_input_embeddings().weight[tokenizer.convert_tokens_to_ids(token)].detach().float()
        assert torch.allclose(row, learned[key][0])
    prompt = f"generate an image in {token} style: a harbour at dusk"
    [with_learned] = renderer.render_prompts([prompt], [9])
    torch.manual_seed(0)
    install_style_embedding(pipe, {k: 30 * torch.randn_like(v) for k, v in learned.items()}, token)  # far away
    [with_other] = renderer.render_prompts([prompt], [9])
    assert np.abs(with_learned.astype(int) - with_other.astype(int)).mean() > 2
    install_style_embedding(pipe, learned, token)
    assert np.array_equal(renderer.render_prompts([prompt], [9])[0], with_learned)

    # The portraits the frames followed ship with the movie; datasets reads them as declared by the card.
    assert set(members) == {"json", "mp4", "style.safetensors", "portraits.safetensors"}
    portraits = read_portraits(members["portraits.safetensors"])
    shown = {name for shot in script.shots() for name in shot.characters[:1]}
    assert set(portraits) == shown and all(p.shape == (64, 64, 3) for p in portraits.values())
    dataset = load_dataset(str(out), split="train")
    assert dataset.features == movie_features(with_style=True, with_portraits=True)
    dataset = dataset.cast_column("mp4", Video(decode=False))
    assert read_portraits(dataset[0]["portraits.safetensors"]).keys() == portraits.keys()
    assert json.loads(json.dumps(dataset[0]["json"]["provenance"]["renderer"]["timesteps"])) == [999, 749, 499, 249]


@pytest.mark.parametrize("kwargs, message", [
    (dict(preset="few-step"), "needs distilled few-step weights"),
    (dict(preset="fast", distilled=DistilledWeights("x/y", "lightning")), "go with --preset few-step"),
    (dict(preset="few-step", refiner="some/refiner", distilled=DistilledWeights("x/y", "lightning")), "--refiner none"),
    (dict(sampler="heun"), "--sampler must be one of"),
])
def test_bad_few_step_settings_are_one_sentence(kwargs, message):
    with pytest.raises(ConfigError, match=message) as info:
        RenderSettings("m", **kwargs)
    assert "\n" not in str(info.value)


def test_bad_distilled_weights_are_one_sentence(make_renderer, tiny_distilled, tmp_path):
    with pytest.raises(ConfigError, match="--distilled-kind must be one of"):
        DistilledWeights("x/y", "turbo")
    pickle = tmp_path / "dmd2_sdxl_4step_unet.bin"
    pickle.write_bytes(b"\x80\x04")
    other = tmp_path / "other.safetensors"
    from safetensors.torch import save_file
    import torch

    save_file({"conv_in.weight": torch.zeros(1)}, str(other))
    two = tmp_path / "two"
    two.mkdir()
    for name in ("a.safetensors", "b.safetensors"):
        save_file({"conv_in.weight": torch.zeros(1)}, str(two / name))
    cases = [
        (tmp_path / "missing.safetensors", "does not exist"),
        (pickle, "pickled checkpoint"),
        (other, "do not fit this UNet"),
        (two, "name the one to load with --distilled-weight-name"),
    ]
    for weights, message in cases:
        with pytest.raises(ConfigError, match=message) as info:
            _few_step(make_renderer, weights).load()
        assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="holds LoRA weights"):
        _few_step(make_renderer, tiny_distilled["lora"],
                  distilled=DistilledWeights(str(tiny_distilled["lora"]), "lightning", format="unet")).load()


def test_command_line_few_step_options(tiny_sdxl, tiny_distilled, tmp_path, capsys):
    from moviellm_data.cli import build_parser, main
    from moviellm_data.renderers.diffusion_cli import settings_from_args

    common = ["generate", "--movies", "1", "--out", str(tmp_path / "out"), "--renderer", "diffusers", "--image-model", "m"]
    args = build_parser(["generate"]).parse_args(common + [
        "--preset", "few-step", "--distilled-weights", "ByteDance/SDXL-Lightning",
        "--distilled-weight-name", "sdxl_lightning_4step_lora.safetensors", "--distilled-kind", "lightning"])
    assert settings_from_args(args) == RenderSettings(
        "m", preset="few-step", distilled=DistilledWeights("ByteDance/SDXL-Lightning", "lightning",
                                                           weight_name="sdxl_lightning_4step_lora.safetensors"))
    assert main(common + ["--preset", "few-step", "--distilled-weights", str(tiny_distilled["lora"]), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--distilled-weights needs --distilled-kind" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()
