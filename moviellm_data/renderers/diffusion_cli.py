"""Command-line options of the ``diffusers`` renderer backend (``moviellm generate/render --renderer diffusers``).

Importing this module imports neither torch nor diffusers, so ``moviellm --help`` stays fast.
"""

from __future__ import annotations

import argparse

from ..argtypes import positive_int
from ..errors import ConfigError
from .presets import DEFAULT_MODEL, PRESETS
from .samplers import SAMPLERS
from .settings import DISTILLED_KINDS, FORMATS, DistilledWeights, IPAdapterSettings, RenderSettings

HELP = "a diffusers text-to-image model (SDXL base + refiner by default) with learned style embeddings"


def add_arguments(group: argparse._ArgumentGroup) -> None:
    """The diffusers renderer's options (``--width/--height`` come from the storyboard group)."""
    presets = "; ".join(f"{p.name}: {p.description}" for p in PRESETS.values())
    group.add_argument("--image-model", default=DEFAULT_MODEL, metavar="PATH_OR_ID",
                       help=f"Text-to-image pipeline: a local diffusers folder or a Hub id. Default: {DEFAULT_MODEL}.")
    group.add_argument("--refiner", default="auto", metavar="PATH_OR_ID",
                       help="SDXL refiner folder or Hub id; 'none' renders with the base model alone. Default: the "
                            "SDXL 1.0 refiner when the preset uses one.")
    group.add_argument("--preset", default="fast", choices=sorted(PRESETS), help=f"Rendering recipe. {presets}. Default: fast.")
    group.add_argument("--steps", type=positive_int, default=None, help="Denoising steps (overrides the preset's, recorded).")
    group.add_argument("--guidance", type=float, default=None, help="Classifier-free guidance scale (overrides the preset's).")
    group.add_argument("--negative-prompt", default=None, help="Negative prompt (overrides the preset's quality/anatomy list).")
    group.add_argument("--sampler", choices=sorted(SAMPLERS), default=None,
                       help="Scheduler recipe (overrides the preset's or the distilled kind's, recorded): "
                            + "; ".join(f"{n}: {v.description}" for n, v in SAMPLERS.items()) + ".")
    group.add_argument("--distilled-weights", default=None, metavar="PATH_OR_ID",
                       help="Few-step weights for --preset few-step: a Hub id, folder or .safetensors file, as LoRA or "
                            "whole UNet weights (read from the file), e.g. ByteDance/SDXL-Lightning.")
    group.add_argument("--distilled-kind", choices=sorted(DISTILLED_KINDS), default=None,
                       help="How the weights were distilled, which decides the sampler, steps and guidance their "
                            "authors prescribe: " + "; ".join(f"{k}: {r.source}" for k, r in DISTILLED_KINDS.items()) + ".")
    group.add_argument("--distilled-weight-name", default=None, metavar="FILE",
                       help="The weights file inside --distilled-weights, e.g. sdxl_lightning_4step_lora.safetensors.")
    group.add_argument("--distilled-subfolder", default="", help="Subfolder of the weights inside --distilled-weights.")
    group.add_argument("--distilled-format", choices=FORMATS, default="auto",
                       help="lora or unet; auto (default) reads it from the weights.")
    group.add_argument("--distilled-lora-scale", type=float, default=1.0,
                       help="Strength a distilled LoRA is fused with. Default: 1.0, as the cards use.")
    group.add_argument("--batch-size", type=positive_int, default=None, help="Shots per pipeline call. Default: the preset's (fast: 8).")
    group.add_argument("--dtype", choices=("float16", "bfloat16", "float32"), default=None,
                       help="Weights and activations of the UNets and text encoders. Default: float16 (use float32 on CPU).")
    group.add_argument("--vae-dtype", choices=("float16", "bfloat16", "float32"), default=None,
                       help="VAE dtype. Default: the preset's (fast: bfloat16; reference: float32 as diffusers upcasts).")
    group.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                       help="torch.compile the UNets (on CUDA by default in the fast preset; compiling takes minutes once).")
    group.add_argument("--compile-mode", default="default", help="torch.compile mode, e.g. default or max-autotune.")
    group.add_argument("--attention", choices=("default", "auto", "flash", "cudnn", "efficient", "math"), default=None,
                       help="Scaled-dot-product attention kernel; auto measures them on this card. Default: auto when compiling.")
    group.add_argument("--device", default=None, help="cuda, cuda:1, cpu... Default: cuda when available.")
    group.add_argument("--offload", choices=("none", "model", "sequential"), default="none",
                       help="CPU offload for small cards: model (whole models on demand) or sequential (layer by layer, slowest).")
    group.add_argument("--vae-tiling", action="store_true", help="Decode in tiles to save memory at high resolution.")
    group.add_argument("--decode-batch", type=positive_int, default=4, help="Latents decoded per VAE call. Default: 4.")
    group.add_argument("--render-seed", type=int, default=0, help="Seed mixed into every frame seed. Default: 0.")
    group.add_argument("--frame-seeds", choices=("movie", "dreamframe"), default="movie",
                       help="movie: seeds from movie id and frame index (default); dreamframe: 20 + frame index as the reference.")
    group.add_argument("--style", choices=("train", "none"), default="train",
                       help="train: learn (or reuse) each movie's style embedding and ship it; none: prompt with the keyword.")
    group.add_argument("--style-steps", type=positive_int, default=None,
                       help="Style training optimizer steps (the reference schedule, rescaled). Default: the preset's (400).")
    group.add_argument("--style-images", type=positive_int, default=None, help="Style images rendered to learn from. Default: 8.")
    group.add_argument("--style-cache", default=None, metavar="DIR",
                       help="Cache of learned style embeddings. Default: $MOVIELLM_CACHE/styles or ~/.cache/moviellm/styles.")
    group.add_argument("--gradient-checkpointing", action="store_true", help="Save memory while learning a style.")
    group.add_argument("--ip-adapter", default=None, metavar="PATH_OR_ID",
                       help="IP-Adapter weights (e.g. h94/IP-Adapter): character portraits condition the frames they appear in.")
    group.add_argument("--ip-adapter-subfolder", default="", help="Subfolder of the IP-Adapter weights, e.g. sdxl_models.")
    group.add_argument("--ip-adapter-weight", default=None, help="IP-Adapter weight file, e.g. ip-adapter_sdxl.safetensors.")
    group.add_argument("--ip-adapter-scale", type=float, default=0.6, help="IP-Adapter strength. Default: 0.6.")


def settings_from_args(args: argparse.Namespace) -> RenderSettings:
    """The :class:`RenderSettings` the options describe (a preset plus the options given); one sentence if invalid."""
    ip_adapter = None
    if args.ip_adapter:
        ip_adapter = IPAdapterSettings(args.ip_adapter, weight_name=args.ip_adapter_weight,
                                       subfolder=args.ip_adapter_subfolder, scale=args.ip_adapter_scale)
    return RenderSettings(
        model=args.image_model, refiner=args.refiner, preset=args.preset,
        width=getattr(args, "width", None), height=getattr(args, "height", None),
        steps=args.steps, guidance_scale=args.guidance, negative_prompt=args.negative_prompt,
        sampler=args.sampler, distilled=distilled_from_args(args),
        seed=args.render_seed, frame_seeds=args.frame_seeds,
        style=args.style, style_steps=args.style_steps, style_images=args.style_images, style_cache=args.style_cache,
        gradient_checkpointing=args.gradient_checkpointing, ip_adapter=ip_adapter,
        batch_size=args.batch_size, dtype=args.dtype, vae_dtype=args.vae_dtype, compile=args.compile,
        compile_mode=args.compile_mode, attention=args.attention, device=args.device, offload=args.offload,
        vae_tiling=args.vae_tiling, decode_batch=args.decode_batch,
    )


def distilled_from_args(args: argparse.Namespace) -> DistilledWeights | None:
    """The :class:`DistilledWeights` of ``--distilled-*``, or None without ``--distilled-weights``."""
    if not args.distilled_weights:
        if args.distilled_kind:
            raise ConfigError("--distilled-kind was given without --distilled-weights; name the weights too.")
        return None
    if not args.distilled_kind:
        raise ConfigError("--distilled-weights needs --distilled-kind (lightning, hyper, dmd2 or lcm): the kind decides "
                          "the sampler, steps and guidance the weights were distilled for.")
    return DistilledWeights(args.distilled_weights, args.distilled_kind, weight_name=args.distilled_weight_name,
                            subfolder=args.distilled_subfolder, format=args.distilled_format,
                            lora_scale=args.distilled_lora_scale)


def build(args: argparse.Namespace):
    """A loaded :class:`DiffusionRenderer` (loading now turns a wrong model into an error before any writing)."""
    settings = settings_from_args(args)
    try:
        from .diffusion import DiffusionRenderer

        return DiffusionRenderer(settings).load()
    except ImportError as err:
        raise ConfigError(f"the diffusers renderer needs the gen extra ({err.name} is missing); run pip install 'moviellm[gen]'.") from None
