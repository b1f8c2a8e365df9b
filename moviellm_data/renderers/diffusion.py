"""Keyframes from a diffusers text-to-image model: SDXL base + refiner by default, any pipeline id.

:class:`DiffusionRenderer` renders the shots of a movie in batches (many shots per pipeline call), with
per-frame seeds derived from the movie id and the frame index, every character name replaced by its
lookalike description and the movie's learned style token in every prompt (style immobilization, see
:mod:`.style`). For SDXL with a refiner it runs the reference recipe: the base model denoises the first
``refiner_switch`` of the schedule and hands its latents to the refiner, which finishes them; the VAE
then decodes the batch.

Speed comes from settings that do not change the recipe: batching, fused attention projections,
channels-last memory, ``torch.compile`` of the UNets (batches are padded to a fixed size so that the
compiled graph is reused), the fastest SDPA kernel, a bf16 VAE. Memory options (CPU offload, VAE
tiling, decode batch) let smaller cards render the same recipe.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import logging
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..script import MovieScript, RendererProvenance, Style
from .base import Renderer
from .noise import starting_latents
from .presets import DEFAULT_MODEL, DEFAULT_REFINER, RenderPreset, StyleTraining, get_preset
from .frame_prompts import FRAME_SEED_SCHEMES, frame_prompt, frame_seed, portrait_prompt, stable_seed, style_image_prompts
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

DTYPES = ("float16", "bfloat16", "float32")
OFFLOAD_MODES = ("none", "model", "sequential")
ATTENTION_BACKENDS = ("default", "auto", "flash", "cudnn", "efficient", "math")
STYLE_MODES = ("train", "none")
# Generic scenes the style images show: the style, not the movie's places, is what is learned, so one
# embedding serves every movie that shares a style (and is cached once for all of them).
STYLE_SUBJECTS = (
    "a city street", "a kitchen", "a park", "a living room", "a beach", "a forest path", "an office",
    "a train station", "a cafe", "a bedroom", "a market", "a harbour",
)


def _looks_like_path(ref: str) -> bool:
    """Hub ids are ``name`` or ``namespace/name``; anything else is meant as a local path."""
    return ref.startswith((".", "/", "~")) or ref.count("/") > 1 or "\\" in ref


def _short(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text if len(text) <= 200 else text[:197] + "..."


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
    elif _looks_like_path(ref):
        raise ConfigError(
            f"{option} {ref} does not exist; give an existing diffusers pipeline folder or a Hub model id "
            f"such as {DEFAULT_MODEL}."
        )
    try:
        return auto_class.from_pretrained(ref, **kwargs)
    except Exception as err:  # diffusers/hub raise many types; the user needs one sentence, -v shows all
        logger.debug("loading %s failed", ref, exc_info=True)
        raise ConfigError(
            f"cannot load the {role} {ref!r} ({_short(err)}); give a diffusers pipeline folder or a Hub model id "
            f"that this machine can reach with {option}."
        ) from None


class DiffusionRenderer(Renderer):
    """Renders keyframes with a diffusers text-to-image pipeline (SDXL base + refiner by default).

    Args:
        model: Hub id or local folder of a text-to-image pipeline (any that
            ``AutoPipelineForText2Image`` loads); default SDXL 1.0 base.
        refiner: Hub id or folder of an SDXL refiner; ``"auto"`` takes the SDXL 1.0 refiner when the preset
            uses one; None (or ``"none"``) renders with the base model alone.
        preset: a name from :data:`~.presets.PRESETS` (``fast``, ``reference``, ``draft``) or a
            :class:`RenderPreset`.
        width, height, steps, guidance_scale, negative_prompt: override the preset's recipe (recorded).
        seed: renderer seed mixed into every frame seed.
        frame_seeds: ``movie`` (from movie id and frame index) or ``dreamframe`` (20 + frame index).
        style: ``train`` learns (or reuses from cache) the movie's style embedding; ``none`` prompts with
            the plain keyword.
        style_steps, style_images: override the preset's style training length and image count.
        style_cache: folder of cached style embeddings (default ``~/.cache/moviellm/styles``).
        batch_size, dtype, vae_dtype, compile: override the preset's execution settings.
        compile_mode: ``torch.compile`` mode (``default``, ``max-autotune``, ...).
        compile_vae: also compile the VAE decoder.
        attention: SDPA kernel: ``default`` (PyTorch's choice), ``auto`` (the fastest measured on this
            card), ``flash``, ``cudnn``, ``efficient`` or ``math``.
        device: ``cuda``, ``cuda:1``, ``cpu``...; default CUDA when available (``cuda:<LOCAL_RANK>`` when
            several processes share the movies).
        offload: ``model`` or ``sequential`` CPU offload for cards that cannot hold the models.
        vae_tiling: decode in tiles (less memory at high resolution).
        decode_batch: latents decoded per VAE call.
        gradient_checkpointing: trade compute for memory while learning a style.
        ip_adapter: Hub id or folder of IP-Adapter weights: each character gets a reference portrait,
            rendered once per movie, that conditions the frames it appears in.
        ip_adapter_subfolder, ip_adapter_weight, ip_adapter_image_encoder, ip_adapter_scale: where the
            weights and image encoder are inside ``ip_adapter``, and their strength.
        revision: model revision (branch, tag or commit) for Hub ids.
        pipeline, refiner_pipeline: already built pipelines to use instead of loading ``model`` /
            ``refiner`` (``model`` and ``refiner`` then only name them in the recipe).
    """

    name = "diffusers"

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        refiner: str | None = "auto",
        preset: str | RenderPreset = "fast",
        width: int | None = None,
        height: int | None = None,
        steps: int | None = None,
        guidance_scale: float | None = None,
        negative_prompt: str | None = None,
        seed: int = 0,
        frame_seeds: str = "movie",
        style: str = "train",
        style_steps: int | None = None,
        style_images: int | None = None,
        style_cache: str | Path | None = None,
        batch_size: int | None = None,
        dtype: str | None = None,
        vae_dtype: str | None = None,
        compile: bool | None = None,
        compile_mode: str = "default",
        compile_vae: bool = False,
        attention: str | None = None,
        device: str | None = None,
        offload: str = "none",
        vae_tiling: bool = False,
        decode_batch: int = 4,
        gradient_checkpointing: bool = False,
        ip_adapter: str | None = None,
        ip_adapter_subfolder: str = "",
        ip_adapter_weight: str | None = None,
        ip_adapter_image_encoder: str | None = "image_encoder",
        ip_adapter_scale: float = 0.6,
        revision: str | None = None,
        pipeline=None,
        refiner_pipeline=None,
    ) -> None:
        self.preset = get_preset(preset) if isinstance(preset, str) else preset
        p = self.preset
        self.model = str(model)
        if refiner == "auto":
            refiner = DEFAULT_REFINER if p.refiner_switch is not None and refiner_pipeline is None and pipeline is None else None
        if isinstance(refiner, str) and refiner.lower() == "none":
            refiner = None
        if refiner_pipeline is not None and refiner is None:
            refiner = "refiner"
        self.refiner = refiner
        self.refiner_switch = p.refiner_switch if refiner is not None else None
        if self.refiner is not None and self.refiner_switch is None:
            self.refiner_switch = 0.75
        self.width = int(p.width if width is None else width)
        self.height = int(p.height if height is None else height)
        self.steps = int(p.steps if steps is None else steps)
        self.guidance_scale = float(p.guidance_scale if guidance_scale is None else guidance_scale)
        self.negative_prompt = p.negative_prompt if negative_prompt is None else negative_prompt
        self.seed = int(seed)
        self.frame_seeds = frame_seeds
        self.style = style
        training = p.style
        if style_images is not None:
            import dataclasses

            training = dataclasses.replace(training, images=int(style_images))
        if style_steps is not None:
            training = training.with_total_steps(int(style_steps))
        self.style_training: StyleTraining = training
        self.batch_size = int(p.batch_size if batch_size is None else batch_size)
        self.dtype = dtype or p.dtype
        self.vae_dtype = vae_dtype if vae_dtype is not None else p.vae_dtype
        self.compile = p.compile if compile is None else bool(compile)
        self._compile_explicit = compile is not None
        self.compile_mode = compile_mode
        self.compile_vae = compile_vae
        self.attention = attention or ("auto" if p.compile else "default")
        self.device = device
        self.offload = offload
        self.vae_tiling = vae_tiling
        self.decode_batch = int(decode_batch)
        self.gradient_checkpointing = gradient_checkpointing
        self.ip_adapter = ip_adapter
        self.ip_adapter_subfolder = ip_adapter_subfolder
        self.ip_adapter_weight = ip_adapter_weight
        self.ip_adapter_image_encoder = ip_adapter_image_encoder
        self.ip_adapter_scale = float(ip_adapter_scale)
        self.revision = revision
        self.style_cache = StyleCache(style_cache)
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
        self._portraits: dict[str, dict] = {}  # movie id -> {character name: (pos, neg) image embeds}
        self._neutral = None  # (pos, neg) image embeds that show no one
        self.timings: dict[str, float] = {}
        self._validate()

    # ------------------------------------------------------------------------------------ validation

    def _validate(self) -> None:
        if self.width < 64 or self.height < 64 or self.width % 8 or self.height % 8:
            raise ConfigError(f"diffusion frames need sizes that are multiples of 8 and at least 64, got {self.width}x{self.height}.")
        if self.steps < 1:
            raise ConfigError(f"--steps must be at least 1, got {self.steps}.")
        if self.guidance_scale < 0:
            raise ConfigError(f"--guidance must not be negative, got {self.guidance_scale}.")
        if self.batch_size < 1 or self.decode_batch < 1:
            raise ConfigError("--batch-size and --decode-batch must be at least 1.")
        for value, allowed, option in (
            (self.dtype, DTYPES, "--dtype"), (self.vae_dtype or "float32", DTYPES, "--vae-dtype"),
            (self.offload, OFFLOAD_MODES, "--offload"), (self.attention, ATTENTION_BACKENDS, "--attention"),
            (self.frame_seeds, FRAME_SEED_SCHEMES, "--frame-seeds"), (self.style, STYLE_MODES, "--style"),
        ):
            if value not in allowed:
                raise ConfigError(f"{option} must be one of {', '.join(allowed)}, got {value!r}.")
        if self.refiner_switch is not None and not 0.0 < self.refiner_switch < 1.0:
            raise ConfigError(f"the refiner switch point must be between 0 and 1, got {self.refiner_switch}.")

    # ------------------------------------------------------------------------------------------ recipe

    def describe(self) -> dict:
        """What decides the frames (for ``pipeline.yaml``): models, preset, recipe, seeds, style training.

        Batch size, compilation, attention kernel, device and memory options are left out: they change
        how fast frames are made, not what they show (beyond floating-point rounding).
        """
        return {
            "name": self.name,
            "model": self.model,
            "revision": self.revision,
            "refiner": self.refiner,
            "preset": self.preset.name,
            "width": self.width,
            "height": self.height,
            "steps": self.steps,
            "refiner_switch": self.refiner_switch,
            "guidance_scale": self.guidance_scale,
            "negative_prompt": self.negative_prompt,
            "dtype": self.dtype,
            "seed": self.seed,
            "frame_seeds": self.frame_seeds,
            "style": self.style_training.describe() if self.style == "train" else None,
            "ip_adapter": None if self.ip_adapter is None else {
                "weights": self.ip_adapter, "subfolder": self.ip_adapter_subfolder,
                "weight_name": self.ip_adapter_weight, "scale": self.ip_adapter_scale,
            },
        }

    def provenance(self, script: MovieScript) -> RendererProvenance:
        self.load()
        digest = None
        if self.style == "train":
            digest = hashlib.sha256(self._style_bytes(script.style)[1]).hexdigest()
        return RendererProvenance(
            name=self.name, model=self.model, refiner=self.refiner, preset=self.preset.name,
            scheduler=type(self._base.scheduler).__name__, steps=self.steps, guidance_scale=self.guidance_scale,
            seed=self.seed, width=self.width, height=self.height, style_embedding_sha256=digest,
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
        device = self.device or self.default_device()
        try:
            torch.empty(0, device=device)
        except (RuntimeError, AssertionError) as err:
            raise ConfigError(f"--device {device} cannot be used here ({_short(err)}); choose cpu or an available cuda device.") from None
        dtype = getattr(torch, self.dtype)
        if device == "cpu" and dtype == torch.float16:
            logger.warning("float16 on the CPU is very slow; pass --dtype float32 (or bfloat16) when rendering without a GPU")
        base, refiner = self._given
        if base is None:
            base = load_pipeline(AutoPipelineForText2Image, self.model, "--image-model", "image model",
                                 dtype=dtype, revision=self.revision)
        if self.refiner is not None and refiner is None:
            if not self._is_sdxl(base):
                raise ConfigError(f"a refiner works with an SDXL base model, but {self.model} is a {type(base).__name__}; pass --refiner none.")
            refiner = load_pipeline(
                AutoPipelineForImage2Image, self.refiner, "--refiner", "refiner", dtype=dtype, revision=self.revision,
                text_encoder_2=base.text_encoder_2, tokenizer_2=base.tokenizer_2, vae=base.vae,
            )
        if refiner is not None and not isinstance(refiner, StableDiffusionXLImg2ImgPipeline):
            raise ConfigError(f"the refiner {self.refiner} is a {type(refiner).__name__}, not an SDXL image-to-image pipeline.")
        if self.style == "train":
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
        """Device placement, dtypes and the speed settings of the preset."""
        import torch

        base, refiner, device = self._base, self._refiner, self._exec_device
        vae = getattr(base, "vae", None)
        if vae is not None and self._is_sdxl(base):
            if self.vae_dtype is not None:
                vae_dtype = getattr(torch, self.vae_dtype)
            elif dtype == torch.float16 and getattr(vae.config, "force_upcast", False):
                vae_dtype = torch.float32  # what diffusers does for the SDXL VAE, which overflows in fp16
            else:
                vae_dtype = dtype
            vae.to(dtype=vae_dtype)
            if self.vae_tiling:
                vae.enable_tiling()
        if self.ip_adapter is not None:
            self._load_ip_adapter()
        preset = self.preset
        if preset.fuse_qkv and self.ip_adapter is None:
            for pipe, fuse_vae in ((base, True), (refiner, False)):
                if pipe is not None and hasattr(pipe, "fuse_qkv_projections") and getattr(pipe, "unet", None) is not None:
                    try:
                        pipe.fuse_qkv_projections(unet=True, vae=fuse_vae and vae is not None)
                    except (ValueError, AttributeError) as err:  # models with added KV projections cannot fuse
                        logger.info("not fusing attention projections: %s", err)
        if preset.channels_last:
            for module in self._unets() + ([vae] if vae is not None else []):
                module.to(memory_format=torch.channels_last)
        pipes = [p for p in (base, refiner) if p is not None]
        if self.offload == "none":
            for pipe in pipes:
                pipe.to(device)
        elif self.offload == "model":
            for pipe in pipes:
                pipe.enable_model_cpu_offload(device=device)
        else:
            for pipe in pipes:
                pipe.enable_sequential_cpu_offload(device=device)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest convolutions
        self._choose_attention(dtype)
        if self.compile and (device.type == "cuda" or self._compile_explicit) and self.offload == "none":
            import torch._inductor.config as inductor_config

            inductor_config.conv_1x1_as_mm = True  # 1x1 convolutions (UNet projections) as matmuls
            for module in self._unets():
                module.compile(mode=self.compile_mode, dynamic=False)
            if self.compile_vae and vae is not None:
                vae.decoder.compile(mode=self.compile_mode, dynamic=False)
            self._compiled = True
        elif self.compile and device.type != "cuda":
            logger.info("not compiling on %s (pass compile=True explicitly to force it)", device)

    def _choose_attention(self, dtype) -> None:
        """Pick the SDPA kernel; ``auto`` times the candidates on this card at the UNet's largest shape."""
        import torch
        from torch.nn.attention import SDPBackend

        names = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
                 "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}
        choice = self.attention
        if choice == "auto":
            if self._exec_device.type != "cuda" or dtype == torch.float32:
                choice = "default"
            else:
                choice = self._fastest_attention(dtype, names)
        self.attention_used = choice
        if choice == "default":
            self._sdpa_backends = None
            return
        # Keep slower kernels after the chosen one for shapes it cannot take (the VAE's 512-wide head).
        order = [names[choice]] + [b for b in (SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH) if b != names[choice]]
        self._sdpa_backends = order

    def _fastest_attention(self, dtype, names) -> str:
        import torch
        import torch.nn.functional as F
        from torch.nn.attention import sdpa_kernel

        batch = 2 * self.batch_size
        tokens = (self.height // 16) * (self.width // 16)  # self-attention at the first attention level
        q = torch.randn(batch, 10, tokens, 64, device=self._exec_device, dtype=dtype)
        timings = {}
        for name in ("cudnn", "flash", "efficient"):
            try:
                with sdpa_kernel([names[name]]):
                    for _ in range(2):
                        F.scaled_dot_product_attention(q, q, q)
                    torch.cuda.synchronize(self._exec_device)
                    start = time.perf_counter()
                    for _ in range(5):
                        F.scaled_dot_product_attention(q, q, q)
                    torch.cuda.synchronize(self._exec_device)
                timings[name] = time.perf_counter() - start
            except RuntimeError as err:
                logger.info("SDPA kernel %s unavailable: %s", name, _short(err))
        del q
        if not timings:
            return "default"
        best = min(timings, key=timings.get)
        logger.info("SDPA kernel timings %s: using %s", {k: round(v * 1000, 2) for k, v in timings.items()}, best)
        return best

    def _attention_context(self):
        if self._sdpa_backends is None:
            return contextlib.nullcontext()
        from torch.nn.attention import sdpa_kernel

        try:
            return sdpa_kernel(self._sdpa_backends, set_priority=True)
        except TypeError:  # older torch: no priorities, the chosen kernel is still enabled first
            return sdpa_kernel(self._sdpa_backends)

    # ------------------------------------------------------------------------------------- rendering

    def render_frames(self, script: MovieScript) -> Iterator[np.ndarray]:
        """Yield one uint8 [H, W, 3] keyframe per shot, in timeline order, ``batch_size`` shots per call."""
        self.load()
        style_word = self._activate_style(script) if self.style == "train" else script.style.keyword
        shots = script.shots()
        prompts = [frame_prompt(script, shot, style_word) for shot in shots]
        seeds = [frame_seed(script.id, i, self.seed, self.frame_seeds) for i in range(len(shots))]
        references = self._frame_references(script, shots, style_word) if self.ip_adapter else None

        def batch(start: int) -> list[np.ndarray]:
            end = start + self.batch_size
            return self.render_prompts(prompts[start:end], seeds[start:end],
                                       ip_embeds=None if references is None else references[start:end])

        # The next batch renders in a worker thread while the caller encodes this one, so the card does
        # not wait for the video encoder (the GIL is released in CUDA and codec calls).
        starts = list(range(0, len(shots), self.batch_size))
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="moviellm-render") as pool:
            pending = pool.submit(batch, starts[0])
            for following in starts[1:] + [None]:
                frames = pending.result()
                if following is not None:
                    pending = pool.submit(batch, following)
                yield from frames
        self._portraits.pop(script.id, None)

    def render_prompts(self, prompts: Sequence[str], seeds: Sequence[int], refine: bool = True, ip_embeds=None) -> list[np.ndarray]:
        """Render ``prompts`` (at most ``batch_size``) with the recipe; frame ``i`` starts from ``seeds[i]``.

        Each frame's starting noise comes from its own CPU generator, so a frame is the same whether it
        is rendered alone or in a batch, on any device. ``refine=False`` skips the refiner (the base model
        then denoises the whole schedule).
        """
        import torch

        self.load()
        count = len(prompts)
        if count == 0:
            return []
        if count > self.batch_size:
            raise ValueError(f"{count} prompts exceed the batch size {self.batch_size}")
        prompts, seeds = list(prompts), list(seeds)
        if ip_embeds is not None:
            ip_embeds = list(ip_embeds)
        elif self.ip_adapter is not None:
            # A UNet with an IP-Adapter always needs image embeds: images of no one (style images) get neutral ones.
            ip_embeds = [self._neutral_reference()] * count
        if self._compiled and count < self.batch_size:
            # A compiled graph is specialised to the batch size: pad instead of recompiling.
            pad = self.batch_size - count
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
            logger.warning("attention kernel %s failed (%s); using PyTorch's default instead", self.attention_used, _short(err))
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
        negatives = [self.negative_prompt] * len(prompts)
        with torch.no_grad(), self._attention_context():
            if self._is_sdxl(self._base):
                return self._render_sdxl(prompts, negatives, generators, refine and self._refiner is not None, ip_embeds)
            return self._render_generic(prompts, negatives, generators)

    def _render_sdxl(self, prompts, negatives, generators, refine: bool, ip_embeds) -> list[np.ndarray]:
        kwargs = dict(
            prompt=prompts, negative_prompt=negatives, num_inference_steps=self.steps,
            guidance_scale=self.guidance_scale, generator=generators, width=self.width, height=self.height,
            latents=starting_latents(self._base, generators, self.width, self.height), output_type="latent",
        )
        if refine:
            kwargs["denoising_end"] = self.refiner_switch
        if ip_embeds is not None:
            kwargs["ip_adapter_image_embeds"] = self._batch_ip_embeds(ip_embeds)
        latents = self._base(**kwargs).images
        if refine:
            latents = self._refiner(
                prompt=prompts, negative_prompt=negatives, image=latents, num_inference_steps=self.steps,
                denoising_start=self.refiner_switch, guidance_scale=self.guidance_scale, generator=generators,
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
        for chunk in latents.split(self.decode_batch):
            z = chunk.to(device=device, dtype=vae.dtype)
            if getattr(config, "latents_mean", None) is not None and getattr(config, "latents_std", None) is not None:
                mean = torch.tensor(config.latents_mean).view(1, -1, 1, 1).to(z)
                std = torch.tensor(config.latents_std).view(1, -1, 1, 1).to(z)
                z = z * std / config.scaling_factor + mean
            else:
                z = z / config.scaling_factor
            if self.preset.channels_last:
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
        optional = dict(negative_prompt=negatives, num_inference_steps=self.steps, guidance_scale=self.guidance_scale,
                        width=self.width, height=self.height)
        kwargs.update({k: v for k, v in optional.items() if k in accepted})
        images = self._base(**kwargs).images
        return [(np.asarray(im) * 255).round().astype(np.uint8) for im in images]

    # ----------------------------------------------------------------------------------------- style

    def style_embedding(self, script: MovieScript) -> bytes | None:
        """The movie's style embedding (safetensors ``{clip_l, clip_g}``), learned once per style and cached."""
        if self.style != "train":
            return None
        self.load()
        return self._style_bytes(script.style)[1]

    def style_key(self, style: Style) -> str:
        """The cache key of a style: everything that decides its embedding."""
        return style_key({
            "format": "moviellm-style-v1",
            "keyword": style.keyword, "phrases": list(style.phrases), "emphasised": list(style.emphasised),
            "model": self.model, "revision": self.revision, "training": self.style_training.describe(),
            "images": {"steps": self.steps, "guidance_scale": self.guidance_scale, "width": self.width,
                       "height": self.height, "negative_prompt": self.negative_prompt},
            "seed": self.seed,
        })

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
        for start in range(0, len(prompts), self.batch_size):
            chunk = prompts[start:start + self.batch_size]
            seeds = [stable_seed("moviellm-style-image", key, start + i) for i in range(len(chunk))]
            # The reference renders its style images with the base model alone.
            images += self.render_prompts(chunk, seeds, refine=False)
        self.timings["style_images_s"] = time.perf_counter() - started
        started = time.perf_counter()
        # PyTorch's default attention kernel here: training needs its backward pass too.
        added = None
        if self.ip_adapter is not None:
            _, neutral = self._neutral_reference()
            added = {"image_embeds": [neutral[None].to(self._base.unet.dtype)]}  # [batch 1, 1 image, ...]
        learned = train_style_embedding(
            self._base, images, style.keyword, token, config, seed=stable_seed("moviellm-style-train", key),
            gradient_checkpointing=self.gradient_checkpointing, added_cond=added,
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

    # ---------------------------------------------------------------------------- reference portraits

    def _load_ip_adapter(self) -> None:
        base = self._base
        if not hasattr(base, "load_ip_adapter") or not self._is_sdxl(base):
            raise ConfigError(f"--ip-adapter needs an SDXL pipeline with IP-Adapter support, not {type(base).__name__}.")
        if not self.ip_adapter_weight:
            raise ConfigError("--ip-adapter needs --ip-adapter-weight, the weight file name inside it (e.g. ip-adapter_sdxl.safetensors).")
        try:
            base.load_ip_adapter(self.ip_adapter, subfolder=self.ip_adapter_subfolder or "",
                                 weight_name=self.ip_adapter_weight, image_encoder_folder=self.ip_adapter_image_encoder)
        except Exception as err:
            logger.debug("loading the IP-Adapter failed", exc_info=True)
            raise ConfigError(
                f"cannot load the IP-Adapter {self.ip_adapter!r} ({_short(err)}); check --ip-adapter, "
                "--ip-adapter-subfolder and --ip-adapter-weight."
            ) from None
        base.set_ip_adapter_scale(self.ip_adapter_scale)

    def _encode_reference(self, image):
        """(positive, negative) image embeds of one reference image for the loaded IP-Adapter."""
        from diffusers.models.embeddings import ImageProjection

        base = self._base
        projection = base.unet.encoder_hid_proj.image_projection_layers[0]
        hidden = not isinstance(projection, ImageProjection)
        positive, negative = base.encode_image(image, base._execution_device, 1, hidden)
        return positive, negative

    def _neutral_reference(self):
        """Embeds that carry no reference (the negative embeds of a blank image), for frames with nobody."""
        if self._neutral is None:
            from PIL import Image

            _, negative = self._encode_reference(Image.new("RGB", (self.width, self.height)))
            self._neutral = (negative, negative)
        return self._neutral

    def _frame_references(self, script: MovieScript, shots, style_word: str) -> list:
        """Per frame: the (positive, negative) embeds of the portrait of the frame's first character."""
        from PIL import Image

        neutral = self._neutral_reference()
        portraits = self._portraits.get(script.id)
        if portraits is None:
            portraits = {}
            characters = [c for c in script.characters if any(c.name in shot.characters for shot in shots)]
            prompts = [portrait_prompt(c, style_word) for c in characters]
            for start in range(0, len(prompts), self.batch_size):
                chunk = prompts[start:start + self.batch_size]
                seeds = [stable_seed("moviellm-portrait", self.seed, script.id, c.name) for c in characters[start:start + self.batch_size]]
                images = self.render_prompts(chunk, seeds)
                for character, image in zip(characters[start:start + self.batch_size], images):
                    portraits[character.name] = self._encode_reference(Image.fromarray(image))
            self._portraits[script.id] = portraits
        return [portraits[shot.characters[0]] if shot.characters else neutral for shot in shots]

    @staticmethod
    def _batch_ip_embeds(per_frame) -> list:
        """``ip_adapter_image_embeds`` for a batch: [negatives of every frame; positives of every frame]."""
        import torch

        negatives = torch.cat([neg[None] for _, neg in per_frame])
        positives = torch.cat([pos[None] for pos, _ in per_frame])
        return [torch.cat([negatives, positives])]
