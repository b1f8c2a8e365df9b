"""Keyframes from a diffusers text-to-image model: SDXL base + refiner by default, any pipeline id.

:class:`DiffusionRenderer` renders the shots of a movie in batches (many shots per pipeline call), with
per-frame seeds derived from the movie id and the frame index, every character name replaced by its
lookalike description and the movie's learned style token in every prompt (style immobilization, see
:mod:`.style`). For SDXL with a refiner it runs the reference recipe: the base model denoises the first
``refiner_switch`` of the schedule and hands its latents to the refiner, which finishes them; the VAE
then decodes the batch.

What it renders with is one :class:`~.settings.RenderSettings` (a preset plus named overrides). Speed
comes from settings that do not change the recipe (:mod:`.speed`): batching, fused attention
projections, channels-last memory, ``torch.compile`` of the UNets (batches are padded to a fixed size so
that the compiled graph is reused), the fastest SDPA kernel, a bf16 VAE. Memory options (CPU offload,
VAE tiling, decode batch) let smaller cards render the same recipe. Characters stay consistent through
an optional IP-Adapter (:mod:`.ip_adapter`), whose portraits ship with the movie. Fewer model evaluations come from
the ``solver`` preset (DPM-Solver++, :mod:`.samplers`) and the ``few-step`` preset (distilled weights,
:mod:`.distilled`).
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import logging
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..argtypes import looks_like_path
from ..errors import ConfigError
from ..script import MovieScript, RendererProvenance, Style
from .base import Renderer
from .distilled import load_distilled_weights
from .frame_prompts import frame_prompt, frame_seed, stable_seed, style_image_prompts
from .ip_adapter import CharacterReferences, load_ip_adapter
from .noise import starting_latents
from .portraits import portraits_bytes
from .presets import DEFAULT_MODEL
from .samplers import with_sampler
from .settings import RenderSettings
from .speed import (
    attention_context,
    choose_attention,
    compile_denoisers,
    fuse_projections,
    short_error,
    use_channels_last,
)
from .style import (
    StyleCache,
    check_style_capable,
    install_style_embedding,
    read_style_embedding,
    style_embedding_bytes,
    style_key,
    style_token,
    train_style_embedding,
)

logger = logging.getLogger(__name__)

# Generic scenes the style images show: the style, not the movie's places, is what is learned, so one
# embedding serves every movie that shares a style (and is cached once for all of them).
STYLE_SUBJECTS = (
    "a city street", "a kitchen", "a park", "a living room", "a beach", "a forest path", "an office",
    "a train station", "a cafe", "a bedroom", "a market", "a harbour",
)


def load_pipeline(auto_class, ref: str, option: str, role: str, **kwargs):
    """``auto_class.from_pretrained(ref)`` with one clear sentence for a missing or wrong model."""
    local = Path(ref).expanduser()
    if local.exists():
        if not local.is_dir() or not (local / "model_index.json").is_file():
            raise ConfigError(
                f"{option} {ref} is not a diffusers pipeline folder (it has no model_index.json); "
                "give a folder saved with save_pretrained or a Hub model id."
            )
        ref = str(local)
    elif looks_like_path(ref):
        raise ConfigError(
            f"{option} {ref} does not exist; give an existing diffusers pipeline folder or a Hub model id "
            f"such as {DEFAULT_MODEL}."
        )
    try:
        return auto_class.from_pretrained(ref, **kwargs)
    except Exception as err:  # diffusers/hub raise many types; the user needs one sentence, -v shows all
        logger.debug("loading %s failed", ref, exc_info=True)
        raise ConfigError(
            f"cannot load the {role} {ref!r} ({short_error(err)}); give a diffusers pipeline folder or a Hub model id "
            f"that this machine can reach with {option}."
        ) from None


class DiffusionRenderer(Renderer):
    """Renders keyframes with a diffusers text-to-image pipeline (SDXL base + refiner by default).

    Args:
        settings: the models, recipe, style, IP-Adapter and execution settings (:class:`RenderSettings`, on top of
            a preset); default: SDXL 1.0 base + refiner with the ``fast`` preset.
        pipeline, refiner_pipeline: already built pipelines to use instead of loading ``settings.model`` /
            ``settings.refiner`` (the names then only label them in the recipe).

    Example::

        renderer = DiffusionRenderer(RenderSettings(preset="reference", steps=30, batch_size=4))
        frames = list(renderer.render_frames(script))   # uint8 [H, W, 3], one per shot
    """

    name = "diffusers"

    def __init__(self, settings: RenderSettings | None = None, *, pipeline=None, refiner_pipeline=None) -> None:
        if settings is not None and not isinstance(settings, RenderSettings):
            raise TypeError("DiffusionRenderer takes a RenderSettings object, e.g. "
                            "DiffusionRenderer(RenderSettings(model=..., preset='fast')).")
        self.settings = settings if settings is not None else RenderSettings()
        self.refiner, self.refiner_switch = self.settings.resolve_refiner(pipeline is not None,
                                                                           refiner_pipeline is not None)
        self.style_training = self.settings.style_training
        self.style_cache = StyleCache(self.settings.style_cache)
        self._given = (pipeline, refiner_pipeline)
        self._base = None
        self._refiner = None
        self._exec_device = None
        self._compiled = False
        self._sdpa_backends = None
        self._attention_checked = False
        self.attention_used = "default"
        self._styles: OrderedDict[str, bytes] = OrderedDict()  # style key -> safetensors bytes (small LRU)
        self._installed: dict[str, str] = {}  # token -> style key currently installed
        self.references = CharacterReferences(self) if self.settings.ip_adapter is not None else None
        self.distilled_format: str | None = None  # "lora" or "unet" once distilled weights are loaded
        self.timings: dict[str, float] = {}

    # ------------------------------------------------------------------------------------------ recipe

    def describe(self) -> dict:
        """What decides the frames (for ``pipeline.yaml``): models, preset, recipe, seeds, style training.

        Batch size, compilation, attention kernel, device and memory options are left out: they change
        how fast frames are made, not what they show (beyond floating-point rounding).
        """
        s = self.settings
        return {
            "name": self.name,
            "model": s.model,
            "revision": s.revision,
            "refiner": self.refiner,
            "preset": s.preset.name,
            "width": s.width,
            "height": s.height,
            "steps": s.steps,
            "refiner_switch": self.refiner_switch,
            "guidance_scale": s.guidance_scale,
            "negative_prompt": s.negative_prompt,
            "dtype": s.dtype,
            "seed": s.seed,
            "frame_seeds": s.frame_seeds,
            "style": self.style_training.describe() if s.style == "train" else None,
            "ip_adapter": None if s.ip_adapter is None else s.ip_adapter.describe(),
            # Sampler, fixed timesteps and distilled weights, where they differ from the model's defaults.
            **s.recipe(),
        }

    def provenance(self, script: MovieScript) -> RendererProvenance:
        self.load()
        s = self.settings
        digest = None
        if s.style == "train":
            digest = hashlib.sha256(self._style_bytes(script.style)[1]).hexdigest()
        return RendererProvenance(
            name=self.name, model=s.model, refiner=self.refiner, preset=s.preset.name,
            scheduler=type(self._base.scheduler).__name__, steps=s.steps, guidance_scale=s.guidance_scale,
            seed=s.seed, width=s.width, height=s.height, style_embedding_sha256=digest, sampler=s.sampler,
            timesteps=None if s.timesteps is None else list(s.timesteps),
            distilled_weights=None if s.distilled is None else s.distilled.weights,
            distilled_kind=None if s.distilled is None else s.distilled.kind,
        )

    # --------------------------------------------------------------------------------------- loading

    @property
    def pipeline(self):
        """The loaded base pipeline (loads it on first use)."""
        self.load()
        return self._base

    @property
    def refiner_pipeline(self):
        self.load()
        return self._refiner

    def load(self) -> DiffusionRenderer:
        """Load and prepare the pipelines (idempotent). Errors are one sentence (:class:`ConfigError`)."""
        if self._base is not None:
            return self
        import torch
        from diffusers import AutoPipelineForImage2Image, AutoPipelineForText2Image, StableDiffusionXLImg2ImgPipeline

        started = time.perf_counter()
        s = self.settings
        device = s.device or self.default_device()
        try:
            torch.empty(0, device=device)
        except (RuntimeError, AssertionError) as err:
            raise ConfigError(f"--device {device} cannot be used here ({short_error(err)}); choose cpu or an available cuda device.") from None
        dtype = getattr(torch, s.dtype)
        if device == "cpu" and dtype == torch.float16:
            logger.warning("float16 on the CPU is very slow; pass --dtype float32 (or bfloat16) when rendering without a GPU")
        base, refiner = self._given
        if base is None:
            base = load_pipeline(AutoPipelineForText2Image, s.model, "--image-model", "image model",
                                 dtype=dtype, revision=s.revision)
        if self.refiner is not None and refiner is None:
            if not self._is_sdxl(base):
                raise ConfigError(f"a refiner works with an SDXL base model, but {s.model} is a {type(base).__name__}; pass --refiner none.")
            refiner = load_pipeline(
                AutoPipelineForImage2Image, self.refiner, "--refiner", "refiner", dtype=dtype, revision=s.revision,
                text_encoder_2=base.text_encoder_2, tokenizer_2=base.tokenizer_2, vae=base.vae,
            )
        if refiner is not None and not isinstance(refiner, StableDiffusionXLImg2ImgPipeline):
            raise ConfigError(f"the refiner {self.refiner} is a {type(refiner).__name__}, not an SDXL image-to-image pipeline.")
        # Our own shallow copies with the recipe's sampler: a pipeline the caller handed in keeps its scheduler.
        base, refiner = with_sampler(base, s.sampler), with_sampler(refiner, s.sampler)
        if s.distilled is not None:
            base = base if base is not self._given[0] else copy.copy(base)
            self.distilled_format = load_distilled_weights(base, s.distilled)
        if s.style == "train":
            check_style_capable(base)
        for pipe in (base, refiner):
            if pipe is not None:
                pipe.set_progress_bar_config(disable=True)
        self._exec_device = torch.device(device)
        self._base, self._refiner = base, refiner
        self._prepare(dtype)
        self.timings["load_s"] = time.perf_counter() - started
        return self

    @staticmethod
    def default_device() -> str:
        """CUDA when available: under torchrun/accelerate each process takes the card of its LOCAL_RANK."""
        import os

        import torch

        if not torch.cuda.is_available():
            return "cpu"
        local_rank = os.environ.get("LOCAL_RANK")
        return f"cuda:{int(local_rank) % torch.cuda.device_count()}" if local_rank and local_rank.isdigit() else "cuda"

    @staticmethod
    def _is_sdxl(pipe) -> bool:
        from diffusers import StableDiffusionXLPipeline

        return isinstance(pipe, StableDiffusionXLPipeline)

    def _unets(self) -> list:
        denoisers = []
        for pipe in (self._base, self._refiner):
            if pipe is None:
                continue
            module = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
            if module is not None and all(module is not d for d in denoisers):
                denoisers.append(module)
        return denoisers

    def _prepare(self, dtype) -> None:
        """Device placement, dtypes, the IP-Adapter and the speed settings (:mod:`.speed`)."""
        import torch

        s = self.settings
        base, refiner, device = self._base, self._refiner, self._exec_device
        vae = getattr(base, "vae", None)
        if vae is not None and self._is_sdxl(base):
            if s.vae_dtype is not None:
                vae_dtype = getattr(torch, s.vae_dtype)
            elif dtype == torch.float16 and getattr(vae.config, "force_upcast", False):
                vae_dtype = torch.float32  # what diffusers does for the SDXL VAE, which overflows in fp16
            else:
                vae_dtype = dtype
            vae.to(dtype=vae_dtype)
            if s.vae_tiling:
                vae.enable_tiling()
        if s.ip_adapter is not None:
            load_ip_adapter(base, s.ip_adapter)
        if s.preset.fuse_qkv and s.ip_adapter is None:
            fuse_projections(base, refiner, vae)
        if s.preset.channels_last:
            use_channels_last(self._unets() + ([vae] if vae is not None else []))
        pipes = [p for p in (base, refiner) if p is not None]
        for pipe in pipes:
            if s.offload == "none":
                pipe.to(device)
            elif s.offload == "model":
                pipe.enable_model_cpu_offload(device=device)
            else:
                pipe.enable_sequential_cpu_offload(device=device)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest convolutions
        self.attention_used, self._sdpa_backends = choose_attention(s.attention, device, dtype, s.batch_size, s.width,
                                                                    s.height)
        self._compiled = compile_denoisers(s, self._unets(), vae, device)

    # ------------------------------------------------------------------------------------- rendering

    def render_frames(self, script: MovieScript) -> Iterator[np.ndarray]:
        """Yield one uint8 [H, W, 3] keyframe per shot, in timeline order, ``batch_size`` shots per call."""
        self.load()
        s = self.settings
        style_word = self._activate_style(script) if s.style == "train" else script.style.keyword
        shots = script.shots()
        prompts = [frame_prompt(script, shot, style_word) for shot in shots]
        seeds = [frame_seed(script.id, i, s.seed, s.frame_seeds) for i in range(len(shots))]
        references = self.references.for_frames(script, shots, style_word) if self.references else None

        def batch(start: int) -> list[np.ndarray]:
            end = start + s.batch_size
            return self.render_prompts(prompts[start:end], seeds[start:end],
                                       ip_embeds=None if references is None else references[start:end])

        # The next batch renders in a worker thread while the caller encodes this one, so the card does
        # not wait for the video encoder (the GIL is released in CUDA and codec calls).
        starts = list(range(0, len(shots), s.batch_size))
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="moviellm-render") as pool:
            pending = pool.submit(batch, starts[0])
            for following in starts[1:] + [None]:
                frames = pending.result()
                if following is not None:
                    pending = pool.submit(batch, following)
                yield from frames
        if self.references:
            self.references.forget(script.id)

    def render_prompts(self, prompts: Sequence[str], seeds: Sequence[int], refine: bool = True, ip_embeds=None) -> list[np.ndarray]:
        """Render ``prompts`` (at most ``batch_size``) with the recipe; frame ``i`` starts from ``seeds[i]``.

        Each frame's starting noise comes from its own CPU generator, so a frame is the same whether it
        is rendered alone or in a batch, on any device. ``refine=False`` skips the refiner (the base model
        then denoises the whole schedule).
        """
        import torch

        self.load()
        batch_size = self.settings.batch_size
        count = len(prompts)
        if count == 0:
            return []
        if count > batch_size:
            raise ValueError(f"{count} prompts exceed the batch size {batch_size}")
        prompts, seeds = list(prompts), list(seeds)
        if ip_embeds is not None:
            ip_embeds = list(ip_embeds)
        elif self.references is not None:
            # A UNet with an IP-Adapter always needs image embeds: images of no one (style images) get neutral ones.
            ip_embeds = [self.references.neutral()] * count
        if self._compiled and count < batch_size:
            # A compiled graph is specialised to the batch size: pad instead of recompiling.
            pad = batch_size - count
            prompts += [prompts[-1]] * pad
            seeds += [seeds[-1]] * pad
            if ip_embeds is not None:
                ip_embeds += [ip_embeds[-1]] * pad
        try:
            frames = self._render_batch(prompts, seeds, refine, ip_embeds)
        except Exception as err:
            if self._sdpa_backends is None or self._attention_checked:
                raise
            # A measured-fastest kernel that the compiled graph cannot use must not stop the run.
            logger.warning("attention kernel %s failed (%s); using PyTorch's default instead", self.attention_used, short_error(err))
            self._sdpa_backends, self.attention_used = None, "default"
            if self._compiled:
                torch._dynamo.reset()
            frames = self._render_batch(prompts, seeds, refine, ip_embeds)
        self._attention_checked = True
        return frames[:count]

    def _render_batch(self, prompts, seeds, refine: bool, ip_embeds) -> list[np.ndarray]:
        import torch

        # One CPU generator per frame: its starting noise is the same alone, in any batch, on any device.
        generators = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
        negatives = [self.settings.negative_prompt] * len(prompts)
        with torch.no_grad(), attention_context(self._sdpa_backends):
            if self._is_sdxl(self._base):
                return self._render_sdxl(prompts, negatives, generators, refine and self._refiner is not None, ip_embeds)
            return self._render_generic(prompts, negatives, generators)

    def _render_sdxl(self, prompts, negatives, generators, refine: bool, ip_embeds) -> list[np.ndarray]:
        s = self.settings
        kwargs = dict(
            prompt=prompts, negative_prompt=negatives, num_inference_steps=s.steps,
            guidance_scale=s.guidance_scale, generator=generators, width=s.width, height=s.height,
            latents=starting_latents(self._base, generators, s.width, s.height), output_type="latent",
        )
        if s.timesteps is not None:
            kwargs["timesteps"] = list(s.timesteps)
        if refine:
            kwargs["denoising_end"] = self.refiner_switch
        if ip_embeds is not None:
            # Without classifier-free guidance (distilled presets) the pipeline takes the positive embeds alone.
            guided = s.guidance_scale > 1 and self._base.unet.config.time_cond_proj_dim is None
            kwargs["ip_adapter_image_embeds"] = CharacterReferences.batch_embeds(ip_embeds, guided)
        latents = self._base(**kwargs).images
        if refine:
            latents = self._refiner(
                prompt=prompts, negative_prompt=negatives, image=latents, num_inference_steps=s.steps,
                denoising_start=self.refiner_switch, guidance_scale=s.guidance_scale, generator=generators,
                output_type="latent",
            ).images
        return self.decode(latents)

    def decode(self, latents) -> list[np.ndarray]:
        """Decode SDXL latents to uint8 frames as the pipeline would, ``decode_batch`` at a time."""
        import torch

        base = self._base
        vae = base.vae
        config = vae.config
        device = base._execution_device
        frames: list[np.ndarray] = []
        for chunk in latents.split(self.settings.decode_batch):
            z = chunk.to(device=device, dtype=vae.dtype)
            if getattr(config, "latents_mean", None) is not None and getattr(config, "latents_std", None) is not None:
                mean = torch.tensor(config.latents_mean).view(1, -1, 1, 1).to(z)
                std = torch.tensor(config.latents_std).view(1, -1, 1, 1).to(z)
                z = z * std / config.scaling_factor + mean
            else:
                z = z / config.scaling_factor
            if self.settings.preset.channels_last:
                z = z.contiguous(memory_format=torch.channels_last)
            image = vae.decode(z, return_dict=False)[0]
            # diffusers' postprocess (denormalize, clamp, x255, round) in float32 on the device: a quarter of
            # the bytes cross to the CPU, and a bf16 VAE's output is not rounded again before scaling.
            pixels = ((image.float() * 0.5 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
            frames.extend(pixels.permute(0, 2, 3, 1).cpu().numpy())
        return frames

    def _render_generic(self, prompts, negatives, generators) -> list[np.ndarray]:
        """Any other text-to-image pipeline: pass what its ``__call__`` accepts, take numpy images back."""
        accepted = set(inspect.signature(self._base.__call__).parameters)
        kwargs = dict(prompt=prompts, generator=generators, output_type="np")
        s = self.settings
        optional = dict(negative_prompt=negatives, num_inference_steps=s.steps, guidance_scale=s.guidance_scale,
                        width=s.width, height=s.height, timesteps=None if s.timesteps is None else list(s.timesteps))
        optional = {k: v for k, v in optional.items() if v is not None}
        kwargs.update({k: v for k, v in optional.items() if k in accepted})
        images = self._base(**kwargs).images
        return [(np.asarray(im) * 255).round().astype(np.uint8) for im in images]

    def portraits(self, script: MovieScript) -> bytes | None:
        """The portraits the IP-Adapter conditioned this movie's frames on (after :meth:`render_frames`), or None."""
        if self.references is None:
            return None
        return portraits_bytes(self.references.take_images(script.id))

    # ----------------------------------------------------------------------------------------- style

    def style_embedding(self, script: MovieScript) -> bytes | None:
        """The movie's style embedding (safetensors ``{clip_l, clip_g}``), learned once per style and cached."""
        if self.settings.style != "train":
            return None
        self.load()
        return self._style_bytes(script.style)[1]

    def style_key(self, style: Style) -> str:
        """The cache key of a style: everything that decides its embedding.

        The style images are drawn, and the token learned, by the model that renders (distilled weights included),
        so the sampler and the weights are part of the key (listed only when they differ from the defaults, so the
        classic presets keep the keys, and the cached embeddings, they always had).
        """
        s = self.settings
        parts = {
            "format": "moviellm-style-v1",
            "keyword": style.keyword, "phrases": list(style.phrases), "emphasised": list(style.emphasised),
            "model": s.model, "revision": s.revision, "training": self.style_training.describe(),
            "images": {"steps": s.steps, "guidance_scale": s.guidance_scale, "width": s.width,
                       "height": s.height, "negative_prompt": s.negative_prompt},
            "seed": s.seed,
        }
        if s.recipe():
            parts["sampling"] = s.recipe()
        return style_key(parts)

    def _style_bytes(self, style: Style) -> tuple[str, bytes]:
        key = self.style_key(style)
        data = self._styles.get(key)
        if data is None:
            data = self.style_cache.get(key)
            if data is None:
                data = self.learn_style(style)
                self.style_cache.put(key, data)
            self._styles[key] = data
            while len(self._styles) > 16:
                self._styles.popitem(last=False)
        self._styles.move_to_end(key)
        return key, data

    def learn_style(self, style: Style) -> bytes:
        """Render the style images and learn the style token; return the safetensors bytes."""
        self.load()
        token = style_token(style.keyword)
        key = self.style_key(style)
        config = self.style_training
        prompts = style_image_prompts(style, list(STYLE_SUBJECTS), config.images)
        started = time.perf_counter()
        images = []
        batch_size = self.settings.batch_size
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start:start + batch_size]
            seeds = [stable_seed("moviellm-style-image", key, start + i) for i in range(len(chunk))]
            # The reference renders its style images with the base model alone.
            images += self.render_prompts(chunk, seeds, refine=False)
        self.timings["style_images_s"] = time.perf_counter() - started
        started = time.perf_counter()
        # PyTorch's default attention kernel here: training needs its backward pass too.
        added = None
        if self.references is not None:
            _, neutral = self.references.neutral()
            added = {"image_embeds": [neutral[None].to(self._base.unet.dtype)]}  # [batch 1, 1 image, ...]
        learned = train_style_embedding(
            self._base, images, style.keyword, token, config, seed=stable_seed("moviellm-style-train", key),
            gradient_checkpointing=self.settings.gradient_checkpointing, added_cond=added,
        )
        self.timings["style_training_s"] = time.perf_counter() - started
        self._installed[token] = key
        logger.info("learned style %s (%s) in %.1f s", token, key[:12], self.timings["style_training_s"])
        return style_embedding_bytes(learned, token, style.keyword)

    def _activate_style(self, script: MovieScript) -> str:
        """Install the movie's style embedding under its token (if not already) and return the token."""
        key, data = self._style_bytes(script.style)
        token = style_token(script.style.keyword)
        if self._installed.get(token) != key:
            install_style_embedding(self._base, read_style_embedding(data, f"style embedding {key[:12]}"), token)
            self._installed[token] = key
        return token
