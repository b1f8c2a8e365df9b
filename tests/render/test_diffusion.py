"""DiffusionRenderer on a tiny SDXL loaded from disk: movies into shards, seeds, batching, equivalence, errors."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
import yaml

from moviellm_data.errors import ConfigError
from moviellm_data.pipeline import GenerateOptions, generate
from moviellm_data.renderers.diffusion import DiffusionRenderer
from moviellm_data.renderers.frame_prompts import frame_prompt, frame_seed
from moviellm_data.renderers.reference import reference_keyframe
from moviellm_data.renderers.settings import RenderSettings
from moviellm_data.shards import iter_tar_samples, read_movies
from moviellm_data.writers.procedural import ProceduralWriter


def test_tiny_movies_render_end_to_end_into_shards(make_renderer, tmp_path):
    renderer = make_renderer()
    out = tmp_path / "dataset"
    result = generate(GenerateOptions(out=out, movies=2, seed=11), ProceduralWriter("tiny"), renderer, progress=False)
    assert result.complete and result.written == 2 and not result.failed

    movies = list(read_movies(out))
    assert len(movies) == 2
    for script, frames in movies:
        assert frames.shape == (12, 64, 64, 3)
        provenance = script.provenance.renderer
        assert provenance.name == "diffusers" and provenance.preset == "fast" and provenance.steps == 2
        assert provenance.refiner == renderer.refiner and provenance.scheduler == "EulerDiscreteScheduler"
        # Real content, and shots differ from one another.
        assert frames.std() > 5
        assert np.abs(frames[0].astype(int) - frames[1].astype(int)).mean() > 2
    samples = [s for shard in sorted(out.glob("*.tar")) for s in iter_tar_samples(shard)]
    for key, members in samples:
        assert set(members) == {"json", "mp4", "style.safetensors"}
        script = json.loads(members["json"])
        assert script["provenance"]["renderer"]["style_embedding_sha256"] == hashlib.sha256(members["style.safetensors"]).hexdigest()

    # Other readers: webdataset yields the style member as bytes that safetensors reads back.
    import webdataset as wds

    from moviellm_data.renderers.style import read_style_embedding

    urls = [str(p) for p in sorted(out.glob("*.tar"))]
    for sample in wds.WebDataset(urls, shardshuffle=False):
        embedding = read_style_embedding(sample["style.safetensors"])
        assert embedding["clip_l"].shape == (1, 32) and embedding["clip_g"].shape == (1, 48)

    # datasets reads the card's features, the style member included (as bytes).
    from datasets import Video, load_dataset

    from moviellm_data.features import movie_features

    dataset = load_dataset(str(out), split="train")
    assert dataset.features == movie_features(with_style=True)
    dataset = dataset.cast_column("mp4", Video(decode=False))
    for row in dataset:
        assert read_style_embedding(row["style.safetensors"])["clip_g"].shape == (1, 48)

    recipe = yaml.safe_load((out / "pipeline.yaml").read_text())["recipe"]["renderer"]
    assert recipe == renderer.describe()
    # Same command again: everything is there, nothing is rendered again.
    rerun = generate(GenerateOptions(out=out, movies=2, seed=11), ProceduralWriter("tiny"), make_renderer(), progress=False)
    assert rerun.written == 0 and rerun.skipped == 2


def test_same_seed_same_frames_and_batching_does_not_matter(make_renderer, short_script):
    first = list(make_renderer(style="none", batch_size=4).render_frames(short_script))
    again = list(make_renderer(style="none", batch_size=4).render_frames(short_script))
    assert len(first) == short_script.num_frames
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    # Different shots differ; another renderer seed changes every frame.
    for i in range(1, len(first)):
        assert np.abs(first[0].astype(int) - first[i].astype(int)).mean() > 2
    reseeded = list(make_renderer(style="none", seed=1).render_frames(short_script))
    assert all(np.abs(a.astype(int) - b.astype(int)).mean() > 2 for a, b in zip(first, reseeded))
    # A frame does not depend on the batch it was rendered in (per-frame generators).
    one_by_one = list(make_renderer(style="none", batch_size=1).render_frames(short_script))
    assert max(np.abs(a.astype(int) - b.astype(int)).max() for a, b in zip(first, one_by_one)) <= 2


def test_padded_batches_give_the_same_frames(make_renderer, tiny_script):
    """Compiled runs pad short batches to the compiled size; the padding must not leak into frames."""
    renderer = make_renderer(style="none", batch_size=4)
    prompts = [frame_prompt(tiny_script, shot, "Romantic") for shot in tiny_script.shots()[:3]]
    seeds = [frame_seed(tiny_script.id, i) for i in range(3)]
    plain = renderer.render_prompts(prompts, seeds)
    renderer._compiled = True  # what load() sets after torch.compile (too slow to compile on CPU here)
    padded = renderer.render_prompts(prompts, seeds)
    assert len(padded) == 3
    assert all(np.abs(a.astype(int) - b.astype(int)).max() <= 2 for a, b in zip(plain, padded))


def test_starting_noise_depends_on_the_seed_alone():
    """The same seed starts from the same noise in every dtype (cast from one float32 draw), alone or batched."""
    from types import SimpleNamespace

    from moviellm_data.renderers.noise import starting_latents

    def pipe(dtype):
        return SimpleNamespace(unet=SimpleNamespace(config=SimpleNamespace(in_channels=4), dtype=dtype),
                               vae_scale_factor=8)

    def generators(*seeds):
        return [torch.Generator("cpu").manual_seed(s) for s in seeds]

    exact = starting_latents(pipe(torch.float32), generators(7, 8), 64, 48)
    assert exact.shape == (2, 4, 6, 8) and exact.dtype == torch.float32
    assert torch.equal(starting_latents(pipe(torch.float32), generators(8), 64, 48)[0], exact[1])
    for dtype in (torch.bfloat16, torch.float16):
        assert torch.equal(starting_latents(pipe(dtype), generators(7, 8), 64, 48), exact.to(dtype))
    assert not torch.equal(starting_latents(pipe(torch.float32), generators(9), 64, 48)[0], exact[0])


def test_equivalent_to_the_reference_recipe(make_renderer, tiny_sdxl):
    """Ours (batched, fused QKV, channels-last, bf16 VAE / bf16 everything) vs DreamFrame's calls (batch 1).

    Tolerance: the same uint8 image up to half-precision rounding, i.e. at most 4 of 255 levels on any
    pixel and under 1 level on average (bf16 keeps 8 significant bits; fp32 runs agree within 2).
    """
    from diffusers import AutoPipelineForImage2Image, AutoPipelineForText2Image

    base_dir, refiner_dir = tiny_sdxl
    base = AutoPipelineForText2Image.from_pretrained(str(base_dir))
    refiner = AutoPipelineForImage2Image.from_pretrained(str(refiner_dir), text_encoder_2=base.text_encoder_2,
                                                         tokenizer_2=base.tokenizer_2, vae=base.vae)
    for pipe in (base, refiner):
        pipe.set_progress_bar_config(disable=True)
    moods = ("smiling", "crying", "laughing", "frowning")
    prompts = [f"generate an image in Romantic style: at the park, a tall man in red is sitting, {m}" for m in moods]
    seeds = [21, 22, 23, 24]
    ours_fp32 = make_renderer(style="none", steps=4, negative_prompt="blurry")
    reference = [reference_keyframe(base, refiner, p, "blurry", s, steps=4, width=64, height=64) for p, s in zip(prompts, seeds)]
    ours_bf16 = make_renderer(style="none", steps=4, negative_prompt="blurry", dtype="bfloat16", vae_dtype="bfloat16")
    for renderer, worst in ((ours_fp32, 2), (ours_bf16, 4)):
        ours = np.stack(renderer.render_prompts(prompts, seeds)).astype(int)
        difference = np.abs(ours - np.stack(reference).astype(int))
        assert difference.max() <= worst and difference.mean() < 1.0, (renderer.settings.dtype, difference.max(), difference.mean())
    # The same calls with another seed are a different image, so the comparison above can fail.
    other = reference_keyframe(base, refiner, prompts[0], "blurry", 99, steps=4, width=64, height=64)
    assert np.abs(other.astype(int) - reference[0].astype(int)).mean() > 2


def test_missing_or_wrong_model_is_one_sentence(tmp_path, tiny_sdxl):
    with pytest.raises(ConfigError) as missing:
        DiffusionRenderer(RenderSettings(str(tmp_path / "no-such-model"), refiner="none", style="none")).load()
    assert "does not exist" in str(missing.value) and "\n" not in str(missing.value)

    not_a_pipeline = tmp_path / "folder"
    not_a_pipeline.mkdir()
    (not_a_pipeline / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="no model_index.json") as wrong:
        DiffusionRenderer(RenderSettings(str(not_a_pipeline), refiner="none", style="none")).load()
    assert "\n" not in str(wrong.value)

    base_dir, _ = tiny_sdxl
    with pytest.raises(ConfigError, match="--refiner") as bad_refiner:
        DiffusionRenderer(RenderSettings(str(base_dir), refiner=str(tmp_path / "nope"), dtype="float32", style="none")).load()
    assert "\n" not in str(bad_refiner.value)

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model_index.json").write_text('{"_class_name": "StableDiffusionXLPipeline", "unet": ["diffusers", "UNet2DConditionModel"]}')
    with pytest.raises(ConfigError, match="cannot load the image model") as unloadable:
        DiffusionRenderer(RenderSettings(str(broken), refiner="none", style="none", dtype="float32")).load()
    assert "\n" not in str(unloadable.value)


def test_command_line_reports_a_wrong_model_before_writing_anything(tmp_path, capsys):
    from moviellm_data.cli import main

    out = tmp_path / "out"
    code = main(["generate", "--movies", "1", "--out", str(out), "--renderer", "diffusers",
                 "--image-model", str(tmp_path / "missing-model"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("moviellm generate: error: --image-model") and err.count("\n") == 1
    assert not out.exists()


def test_any_text_to_image_pipeline_renders(tmp_path, short_script):
    """A non-SDXL pipeline (a tiny Stable Diffusion 1.x) through AutoPipelineForText2Image: base only, no style."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from moviellm_data.renderers.from_configs import TINY_SDXL, write_byte_level_clip_tokenizer

    torch.manual_seed(0)
    unet_config = {k: v for k, v in TINY_SDXL["unet"].items()
                   if k not in ("addition_embed_type", "addition_time_embed_dim", "projection_class_embeddings_input_dim")}
    unet_config["cross_attention_dim"] = 32
    pipe = StableDiffusionPipeline(
        vae=AutoencoderKL.from_config(TINY_SDXL["vae"]),
        text_encoder=CLIPTextModel(CLIPTextConfig(**TINY_SDXL["text_encoder"])),
        tokenizer=write_byte_level_clip_tokenizer(tmp_path / "tokenizer"),
        unet=UNet2DConditionModel.from_config(unet_config),
        scheduler=DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, steps_offset=1,
                                clip_sample=False, set_alpha_to_one=False),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(str(tmp_path / "sd"))

    with pytest.raises(ConfigError, match="use --style none"):
        DiffusionRenderer(RenderSettings(str(tmp_path / "sd"), refiner="none", dtype="float32")).load()
    with pytest.raises(ConfigError, match="a refiner works with an SDXL base"):
        DiffusionRenderer(RenderSettings(str(tmp_path / "sd"), refiner=str(tmp_path / "sd"), dtype="float32", style="none")).load()
    renderer = DiffusionRenderer(RenderSettings(str(tmp_path / "sd"), refiner="none", preset="draft", width=64, height=64,
                                                steps=2, dtype="float32", style="none", batch_size=4))
    frames = list(renderer.render_frames(short_script))
    assert len(frames) == short_script.num_frames and frames[0].shape == (64, 64, 3) and frames[0].dtype == np.uint8
    assert renderer.provenance(short_script).scheduler == "DDIMScheduler"
    again = list(DiffusionRenderer(RenderSettings(str(tmp_path / "sd"), refiner="none", preset="draft", width=64, height=64,
                                                  steps=2, dtype="float32", style="none", batch_size=1))
                 .render_frames(short_script))
    assert max(np.abs(a.astype(int) - b.astype(int)).max() for a, b in zip(frames, again)) <= 2
