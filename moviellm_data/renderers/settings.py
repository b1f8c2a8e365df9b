"""What a :class:`~moviellm_data.renderers.diffusion.DiffusionRenderer` renders with, as one typed object.

:class:`RenderSettings` sits on top of the presets (:mod:`.presets`): it names a preset and overrides any of
its fields by name; every field left at None takes the preset's value when the settings are made, so a
settings object always holds the values used. The command line builds one from its options
(:mod:`.diffusion_cli`), Python callers write it directly::

    settings = RenderSettings(model="stabilityai/stable-diffusion-xl-base-1.0", preset="fast", steps=30)
    renderer = DiffusionRenderer(settings)

Some fields decide what a keyframe shows (the models, the recipe, seeds, style training, the IP-Adapter):
they are recorded in the dataset's ``pipeline.yaml`` (:meth:`DiffusionRenderer.describe`). The others decide
only how fast and in how much memory frames are made (batch size, compilation, attention kernel, device,
offload, tiling) and are left out of the recipe.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..limits import check_frame_size
from .frame_prompts import FRAME_SEED_SCHEMES
from .presets import DEFAULT_MODEL, DEFAULT_REFINER, RenderPreset, StyleTraining, get_preset
from .samplers import SAMPLERS

DTYPES = ("float16", "bfloat16", "float32")
OFFLOAD_MODES = ("none", "model", "sequential")
ATTENTION_BACKENDS = ("default", "auto", "flash", "cudnn", "efficient", "math")
STYLE_MODES = ("train", "none")


#: How distilled weights are stored: read from the weights (``auto``), a LoRA, or whole UNet weights.
FORMATS = ("auto", "lora", "unet")


@dataclass(frozen=True)
class DistilledRecipe:
    """How weights of one kind are sampled: the sampler name, steps, guidance, and fixed timesteps if any."""

    sampler: str
    steps: int
    guidance_scale: float
    timesteps: tuple[int, ...] | None = None
    source: str = ""


DISTILLED_KINDS: dict[str, DistilledRecipe] = {
    "lightning": DistilledRecipe("euler-trailing", 4, 0.0, None,
                                 "ByteDance/SDXL-Lightning: EulerDiscreteScheduler, timestep_spacing trailing, guidance 0"),
    "hyper": DistilledRecipe("ddim-trailing", 8, 0.0, None,
                             "ByteDance/Hyper-SD: DDIMScheduler, timestep_spacing trailing, guidance 0 (CFG LoRAs: 5-8)"),
    "dmd2": DistilledRecipe("lcm", 4, 0.0, (999, 749, 499, 249),
                            "tianweiy/DMD2: LCMScheduler at timesteps 999, 749, 499, 249, guidance 0"),
    "lcm": DistilledRecipe("lcm", 4, 1.0, None,
                           "latent-consistency/lcm-lora-sdxl: LCMScheduler, 2-8 steps, guidance off or 1-2"),
}


@dataclass(frozen=True)
class DistilledWeights:
    """Few-step weights for the SDXL UNet and the kind of distillation that made them.

    Args:
        weights: a Hub id, a folder, or a ``.safetensors`` file.
        kind: ``lightning``, ``hyper``, ``dmd2`` or ``lcm`` (:data:`DISTILLED_KINDS`): decides the sampler.
        weight_name: the file inside ``weights`` (e.g. ``sdxl_lightning_4step_lora.safetensors``); None: the folder
            is a diffusers UNet folder, or holds diffusers' ``pytorch_lora_weights.safetensors``.
        subfolder: where the weights are inside ``weights``.
        format: ``auto`` (read from the weights), ``lora`` or ``unet``.
        lora_scale: the strength a LoRA is fused with (the cards use 1.0).
    """

    weights: str
    kind: str
    weight_name: str | None = None
    subfolder: str = ""
    format: str = "auto"
    lora_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in DISTILLED_KINDS:
            raise ConfigError(f"--distilled-kind must be one of {', '.join(DISTILLED_KINDS)}, got {self.kind!r}; "
                              "it names how the weights were distilled and so how they are sampled.")
        if self.format not in FORMATS:
            raise ConfigError(f"--distilled-format must be one of {', '.join(FORMATS)}, got {self.format!r}.")
        object.__setattr__(self, "weights", str(self.weights))
        object.__setattr__(self, "lora_scale", float(self.lora_scale))

    @property
    def recipe(self) -> DistilledRecipe:
        return DISTILLED_KINDS[self.kind]

    def describe(self) -> dict:
        """What decides the frames, for the dataset recipe."""
        return {"weights": self.weights, "kind": self.kind, "weight_name": self.weight_name,
                "subfolder": self.subfolder, "format": self.format, "lora_scale": self.lora_scale}


@dataclass(frozen=True)
class IPAdapterSettings:
    """Character consistency through an IP-Adapter: each character's portrait conditions the frames it appears in.

    Args:
        weights: Hub id or folder of the IP-Adapter weights (e.g. ``h94/IP-Adapter``).
        weight_name: the weight file inside it (e.g. ``ip-adapter_sdxl.safetensors``).
        subfolder: where the weights are inside ``weights`` (e.g. ``sdxl_models``).
        image_encoder: the image encoder's folder inside ``weights``.
        scale: the adapter's strength.
    """

    weights: str
    weight_name: str | None = None
    subfolder: str = ""
    image_encoder: str | None = "image_encoder"
    scale: float = 0.6

    def __post_init__(self) -> None:
        if not self.weight_name:
            raise ConfigError("--ip-adapter needs --ip-adapter-weight, the weight file name inside it "
                              "(e.g. ip-adapter_sdxl.safetensors).")
        object.__setattr__(self, "scale", float(self.scale))

    def describe(self) -> dict:
        """What decides the frames, for the dataset recipe."""
        return {"weights": self.weights, "subfolder": self.subfolder, "weight_name": self.weight_name,
                "scale": self.scale}


@dataclass(frozen=True)
class RenderSettings:
    """Models, recipe, style, IP-Adapter and execution settings of a diffusion renderer.

    Models:
        model: Hub id or local folder of a text-to-image pipeline (any that ``AutoPipelineForText2Image`` loads).
        refiner: Hub id or folder of an SDXL refiner; ``"auto"`` takes the SDXL 1.0 refiner when the preset uses
            one; None (or ``"none"``) renders with the base model alone.
        revision: model revision (branch, tag or commit) for Hub ids.

    Recipe (None: the preset's value):
        preset: a name from :data:`~.presets.PRESETS` (``fast``, ``reference``, ``draft``, ``solver``, ``few-step``)
            or a :class:`~.presets.RenderPreset`.
        width, height, steps, guidance_scale, negative_prompt: the keyframe recipe.
        sampler: a name from :data:`~.samplers.SAMPLERS` (the scheduler and its options).
        seed: renderer seed mixed into every frame seed.
        frame_seeds: ``movie`` (from movie id and frame index) or ``dreamframe`` (20 + frame index).

    Distilled weights (the ``few-step`` preset, and only it):
        distilled: :class:`~.distilled.DistilledWeights`; their kind gives the sampler, steps, guidance and fixed
            timesteps where the preset leaves them open (named overrides still win; the kind's fixed timesteps apply
            only at its own step count). :attr:`timesteps` holds the result.

    Style:
        style: ``train`` learns (or reuses from cache) each movie's style embedding; ``none`` prompts with the
            plain keyword.
        style_steps, style_images: the preset's style training rescaled to this many optimizer steps, rendered from
            this many images (:attr:`style_training` is the result).
        style_cache: folder of cached style embeddings (default ``$MOVIELLM_CACHE/styles`` or
            ``~/.cache/moviellm/styles``).
        gradient_checkpointing: trade compute for memory while learning a style.

    IP-Adapter:
        ip_adapter: :class:`IPAdapterSettings`, or None for none.

    Execution (None: the preset's value; never recorded):
        batch_size: shots per pipeline call.
        dtype, vae_dtype: of the denoisers and text encoders, and of the VAE (None decodes as diffusers does).
        compile: ``torch.compile`` the denoisers: True always, False never, None as the preset says on CUDA only.
        compile_mode: ``torch.compile`` mode (``default``, ``max-autotune``, ...); compile_vae: also the VAE decoder.
        attention: SDPA kernel: ``default`` (PyTorch's choice), ``auto`` (the fastest measured on this card),
            ``flash``, ``cudnn``, ``efficient`` or ``math``; None: ``auto`` when the preset compiles.
        device: ``cuda``, ``cuda:1``, ``cpu``...; None: CUDA when available (``cuda:<LOCAL_RANK>`` when several
            processes share the movies).
        offload: ``model`` or ``sequential`` CPU offload for cards that cannot hold the models.
        vae_tiling: decode in tiles (less memory at high resolution); decode_batch: latents decoded per VAE call.
    """

    model: str = DEFAULT_MODEL
    refiner: str | None = "auto"
    revision: str | None = None
    preset: str | RenderPreset = "fast"
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    guidance_scale: float | None = None
    negative_prompt: str | None = None
    sampler: str | None = None
    distilled: DistilledWeights | None = None
    seed: int = 0
    frame_seeds: str = "movie"
    style: str = "train"
    style_steps: int | None = None
    style_images: int | None = None
    style_cache: str | Path | None = None
    gradient_checkpointing: bool = False
    ip_adapter: IPAdapterSettings | None = None
    batch_size: int | None = None
    dtype: str | None = None
    vae_dtype: str | None = None
    compile: bool | None = None
    compile_mode: str = "default"
    compile_vae: bool = False
    attention: str | None = None
    device: str | None = None
    offload: str = "none"
    vae_tiling: bool = False
    decode_batch: int = 4

    def __post_init__(self) -> None:
        preset = get_preset(self.preset) if isinstance(self.preset, str) else self.preset
        if preset.distilled and self.distilled is None:
            raise ConfigError(f"the {preset.name} preset needs distilled few-step weights: pass --distilled-weights "
                              "PATH_OR_ID and --distilled-kind lightning, hyper, dmd2 or lcm.")
        if self.distilled is not None and not preset.distilled:
            raise ConfigError(f"--distilled-weights go with --preset few-step, not {preset.name}: their sampler, steps "
                              "and guidance are a recipe of their own.")
        kind = self.distilled.recipe if self.distilled is not None else None
        steps = int(self.steps if self.steps is not None else (kind.steps if kind else preset.steps))
        timesteps = kind.timesteps if kind and kind.timesteps and len(kind.timesteps) == steps else None
        resolved = {
            "preset": preset,
            "model": str(self.model),
            "width": int(preset.width if self.width is None else self.width),
            "height": int(preset.height if self.height is None else self.height),
            "steps": steps,
            "guidance_scale": float(self.guidance_scale if self.guidance_scale is not None
                                    else (kind.guidance_scale if kind else preset.guidance_scale)),
            "sampler": self.sampler or (kind.sampler if kind else preset.sampler),
            "_timesteps": timesteps,
            "negative_prompt": preset.negative_prompt if self.negative_prompt is None else self.negative_prompt,
            "seed": int(self.seed),
            "batch_size": int(preset.batch_size if self.batch_size is None else self.batch_size),
            "dtype": self.dtype or preset.dtype,
            "vae_dtype": preset.vae_dtype if self.vae_dtype is None else self.vae_dtype,
            "attention": self.attention or ("auto" if preset.compile else "default"),
            "decode_batch": int(self.decode_batch),
        }
        for name, value in resolved.items():
            object.__setattr__(self, name, value)
        self._validate()

    def _validate(self) -> None:
        check_frame_size(self.width, self.height)  # the bounds every frame size has (moviellm_data.limits)
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
            (self.sampler, tuple(SAMPLERS), "--sampler"),
        ):
            if value not in allowed:
                raise ConfigError(f"{option} must be one of {', '.join(allowed)}, got {value!r}.")
        switch = self.preset.refiner_switch
        if switch is not None and not 0.0 < switch < 1.0:
            raise ConfigError(f"the refiner switch point must be between 0 and 1, got {switch}.")
        if self.preset.distilled and self.refiner not in (None, "auto") and str(self.refiner).lower() != "none":
            raise ConfigError(f"the {self.preset.name} preset renders with the distilled base model alone; "
                              "pass --refiner none (or leave --refiner out).")

    @property
    def timesteps(self) -> tuple[int, ...] | None:
        """Fixed denoising timesteps (DMD2's 999, 749, 499, 249 at 4 steps), or None: the sampler spaces them."""
        return self._timesteps

    def recipe(self) -> dict:
        """The settings beyond the reference recipe's fields that decide the frames (empty for the classic presets).

        Only what differs from the defaults is listed, so recipes of datasets made before samplers and distilled
        weights existed stay the same and those datasets can be continued.
        """
        extra: dict = {}
        if self.sampler != "model":
            extra["sampler"] = self.sampler
        if self.timesteps is not None:
            extra["timesteps"] = list(self.timesteps)
        if self.distilled is not None:
            extra["distilled"] = self.distilled.describe()
        return extra

    @property
    def style_training(self) -> StyleTraining:
        """How the style embedding is learned: the preset's, with ``style_images`` and ``style_steps`` applied."""
        training = self.preset.style
        if self.style_images is not None:
            training = dataclasses.replace(training, images=int(self.style_images))
        if self.style_steps is not None:
            training = training.with_total_steps(int(self.style_steps))
        return training

    def resolve_refiner(self, pipeline_given: bool = False, refiner_given: bool = False) -> tuple[str | None, float | None]:
        """The refiner that renders (its name) and the switch point, given which pipelines the caller built.

        ``"auto"`` means the SDXL 1.0 refiner when the preset uses one and no pipeline was given; a given refiner
        pipeline without a name is called ``"refiner"``; a refiner without a preset switch point takes over at 0.75.
        """
        refiner = self.refiner
        if refiner == "auto":
            uses_refiner = self.preset.refiner_switch is not None and not refiner_given and not pipeline_given
            refiner = DEFAULT_REFINER if uses_refiner else None
        if isinstance(refiner, str) and refiner.lower() == "none":
            refiner = None
        if refiner_given and refiner is None:
            refiner = "refiner"
        switch = self.preset.refiner_switch if refiner is not None else None
        if refiner is not None and switch is None:
            switch = 0.75
        return refiner, switch

    def compiles_on(self, device_type: str) -> bool:
        """Whether the denoisers are compiled on this kind of device (the preset's choice applies on CUDA only)."""
        if self.compile is None:
            return self.preset.compile and device_type == "cuda"
        return bool(self.compile)


__all__ = ["ATTENTION_BACKENDS", "DISTILLED_KINDS", "DTYPES", "DistilledRecipe", "DistilledWeights", "FORMATS", "IPAdapterSettings", "OFFLOAD_MODES", "RenderSettings", "STYLE_MODES"]
