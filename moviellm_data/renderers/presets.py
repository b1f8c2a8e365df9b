"""Named rendering recipes for :class:`~moviellm_data.renderers.diffusion.DiffusionRenderer`.

A preset fixes everything that decides what a keyframe looks like (steps, base/refiner split, guidance,
resolution, negative prompt, how the style embedding is learned) plus how fast it is computed (batch
size, dtypes, compilation). A recipe never changes silently: choosing another look means choosing
another preset or overriding a field by name, and both are recorded in the dataset recipe.

- ``reference``: the MovieLLM/DreamFrame keyframe recipe, computed as they compute it: SDXL base +
  refiner in fp16, 40 steps with the base denoising the first 75 % of the schedule, one image per
  call, VAE decoded in fp32, 1024 x 1024.
- ``fast`` (default): the same recipe (same steps, schedule, switch point, guidance, resolution and
  negative prompt, so the same image up to half-precision rounding) computed fast: many shots per
  call, fused attention projections, channels-last memory, ``torch.compile`` of both UNets on CUDA, VAE
  decoded in bf16 (which, unlike fp16, does not overflow in the SDXL VAE).
- ``draft``: a different, cheaper look for previews: base model only, 20 steps, 768 x 768.
- ``solver``: fewer model evaluations with a better ODE solver: DPM-Solver++ (2M, Karras sigmas) in 24 steps with
  the reference's base/refiner split at 0.75 and guidance, computed like ``fast``. A different image from the
  reference (another sampler), meant to show the same thing.
- ``few-step``: distilled few-step weights (SDXL-Lightning, Hyper-SD, DMD2, LCM-LoRA; ``RenderSettings.distilled``),
  sampled as their authors prescribe (:data:`~.distilled.DISTILLED_KINDS`: the sampler, 4-8 steps, guidance off),
  base model only, computed like ``fast``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..errors import ConfigError

DEFAULT_MODEL = "stabilityai/stable-diffusion-xl-base-1.0"
DEFAULT_REFINER = "stabilityai/stable-diffusion-xl-refiner-1.0"

# Quality and anatomy defects steered away from, in the spirit of the reference's fixed negative prompt.
DEFAULT_NEGATIVE_PROMPT = (
    "worst quality, low quality, normal quality, lowres, blurry, jpeg artifacts, watermark, signature, "
    "username, text, error, cropped, monochrome, grayscale, sketch, bad anatomy, bad proportions, "
    "deformed, disfigured, mutation, mutated hands, poorly drawn hands, poorly drawn face, extra fingers, "
    "missing fingers, fused fingers, too many fingers, extra limbs, missing limbs, extra arms, extra legs, "
    "long neck, cross-eyed, duplicate body"
)

# The reference's piecewise-constant learning rate: (optimizer steps, learning rate) segments, 400
# optimizer steps in all (each accumulating 2 single-image micro-steps), 1e-3 down to 3e-4.
REFERENCE_STYLE_SCHEDULE: tuple[tuple[int, float], ...] = (
    (4, 1e-3), (8, 9e-4), (13, 8e-4), (20, 7e-4), (35, 6e-4), (60, 5e-4), (100, 4e-4), (160, 3e-4),
)

# Captions the style token is learned under ({} is the token).
STYLE_TEMPLATES: tuple[str, ...] = (
    "generate an image in {} style",
    "an image in {} style",
    "a scene depicted in {} style",
    "people in a place, in {} style",
    "a picture in the style of {}",
)


@dataclass(frozen=True)
class StyleTraining:
    """How the style embedding (textual inversion of the style keyword) is learned.

    Args:
        images: how many style images are rendered from the keyword and style phrases.
        schedule: ``(optimizer steps, learning rate)`` segments, applied in order.
        gradient_accumulation: single-image micro-steps per optimizer step.
        flips: add horizontally flipped copies of the style images.
        num_vectors: embedding vectors per text encoder for the token.
        init: ``"keyword"`` starts from the keyword's own embedding, ``"random"`` from small noise (the
            reference overwrote the keyword's row starting from noise).
        weight_decay, max_grad_norm: AdamW weight decay and per-encoder gradient clipping.
        templates: captions the token is learned under.
    """

    images: int = 8
    schedule: tuple[tuple[int, float], ...] = REFERENCE_STYLE_SCHEDULE
    gradient_accumulation: int = 2
    flips: bool = True
    num_vectors: int = 1
    init: str = "keyword"
    weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    templates: tuple[str, ...] = STYLE_TEMPLATES

    def __post_init__(self) -> None:
        if self.images < 1:
            raise ConfigError(f"style training needs at least one image, got {self.images}.")
        if not self.schedule or any(steps < 1 or lr <= 0 for steps, lr in self.schedule):
            raise ConfigError("the style learning-rate schedule needs (steps >= 1, rate > 0) segments.")
        if self.gradient_accumulation < 1 or self.num_vectors < 1:
            raise ConfigError("gradient accumulation and the number of style vectors must be at least 1.")
        if self.init not in ("keyword", "random"):
            raise ConfigError(f"style init must be 'keyword' or 'random', got {self.init!r}.")

    @property
    def total_steps(self) -> int:
        """Optimizer steps in the whole schedule."""
        return sum(steps for steps, _ in self.schedule)

    def learning_rate(self, step: int) -> float:
        """The learning rate of optimizer step ``step`` (0-based)."""
        for steps, lr in self.schedule:
            if step < steps:
                return lr
            step -= steps
        return self.schedule[-1][1]

    def with_total_steps(self, total: int) -> StyleTraining:
        """The same schedule shape squeezed or stretched to ``total`` optimizer steps."""
        if total < 1:
            raise ConfigError(f"style training needs at least 1 step, got {total}.")
        if total == self.total_steps:
            return self
        n = len(self.schedule)
        if total < n:
            # Too short for every segment: one step each of evenly spread segments, first to last.
            picks = [0] if total == 1 else [round(i * (n - 1) / (total - 1)) for i in range(total)]
            return dataclasses.replace(self, schedule=tuple((1, self.schedule[i][1]) for i in picks))
        # Every segment keeps at least one step; the rest is shared in proportion, rounding cumulatively.
        spare, whole = total - n, self.total_steps
        segments, given, running = [], 0, 0
        for steps, lr in self.schedule:
            running += steps
            share = round(running * spare / whole) - given
            given += share
            segments.append((1 + share, lr))
        return dataclasses.replace(self, schedule=tuple(segments))

    def describe(self) -> dict:
        data = dataclasses.asdict(self)
        data["schedule"] = [list(segment) for segment in self.schedule]
        data["templates"] = list(self.templates)
        return data


@dataclass(frozen=True)
class RenderPreset:
    """A named keyframe recipe and the execution settings it is computed with.

    Recipe (decides the image): ``steps``, ``refiner_switch`` (fraction of the schedule the base model
    denoises before the refiner takes over; None renders with the base model only), ``guidance_scale``,
    ``width``/``height``, ``negative_prompt``, ``style``, ``sampler`` (a name from :data:`~.samplers.SAMPLERS`;
    ``model`` keeps the model's own scheduler) and ``distilled`` (the recipe needs distilled few-step weights,
    whose kind then decides the sampler, steps and guidance).

    Execution (decides the speed; the image only up to floating-point rounding): ``batch_size`` (shots
    per pipeline call), ``dtype`` (UNets and text encoders), ``vae_dtype`` (None decodes as diffusers
    does: fp32 when an fp16 VAE asks to be upcast), ``compile`` (``torch.compile`` both UNets when running
    on CUDA), ``channels_last``, ``fuse_qkv``.
    """

    name: str
    description: str
    steps: int = 40
    refiner_switch: float | None = 0.75
    guidance_scale: float = 5.0
    width: int = 1024
    height: int = 1024
    negative_prompt: str = DEFAULT_NEGATIVE_PROMPT
    style: StyleTraining = field(default_factory=StyleTraining)
    batch_size: int = 1
    dtype: str = "float16"
    vae_dtype: str | None = None
    compile: bool = False
    channels_last: bool = False
    fuse_qkv: bool = False
    sampler: str = "model"
    distilled: bool = False

    def recipe(self) -> dict:
        """The fields that decide the image, for the dataset recipe."""
        return {
            "steps": self.steps,
            "refiner_switch": self.refiner_switch,
            "guidance_scale": self.guidance_scale,
            "width": self.width,
            "height": self.height,
            "negative_prompt": self.negative_prompt,
            "sampler": self.sampler,
            "distilled": self.distilled,
        }


# How the batched presets are computed (the image only up to floating-point rounding): many shots per call, a bf16
# VAE, torch.compile on CUDA, channels-last memory, fused attention projections.
BATCHED_EXECUTION = dict(batch_size=8, vae_dtype="bfloat16", compile=True, channels_last=True, fuse_qkv=True)

PRESETS: dict[str, RenderPreset] = {
    "reference": RenderPreset(
        name="reference",
        description="DreamFrame's recipe as they run it: SDXL base+refiner, fp16, 40 steps, switch at 0.75, batch 1",
    ),
    "fast": RenderPreset(
        name="fast",
        description="the reference recipe (same image up to half-precision rounding), batched and compiled",
        **BATCHED_EXECUTION,
    ),
    "draft": RenderPreset(
        name="draft",
        description="a cheaper look for previews: base model only, 20 steps, 768x768",
        steps=20,
        refiner_switch=None,
        width=768,
        height=768,
        style=StyleTraining(images=4).with_total_steps(100),
        **{**BATCHED_EXECUTION, "compile": False},
    ),
    "solver": RenderPreset(
        name="solver",
        description="DPM-Solver++ (2M, Karras sigmas) in 24 steps, base/refiner split at 0.75, batched and compiled",
        steps=24,
        sampler="dpmsolver++",
        **BATCHED_EXECUTION,
    ),
    "few-step": RenderPreset(
        name="few-step",
        description="distilled few-step weights (--distilled-weights, --distilled-kind) sampled as their authors "
                    "prescribe (4-8 steps, guidance off), base model only, batched and compiled",
        steps=4,
        refiner_switch=None,
        guidance_scale=0.0,
        distilled=True,
        **BATCHED_EXECUTION,
    ),
}


def get_preset(name: str) -> RenderPreset:
    """The preset called ``name``; a clear error listing the known ones otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown render preset {name!r}; choose one of {', '.join(PRESETS)}.") from None
