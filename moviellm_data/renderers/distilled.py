"""Distilled few-step weights for the SDXL UNet (SDXL-Lightning, Hyper-SD, DMD2, LCM-LoRA), loaded as their authors do.

The user names the weights (a folder, a ``.safetensors`` file, or a Hub id with ``weight_name``) and their *kind*;
the kind decides how they are sampled, exactly as the weights' model cards prescribe (:data:`DISTILLED_KINDS`):

========== ================================ ===== ======== ===============================================
kind       sampler (:mod:`.samplers`)        steps guidance source
========== ================================ ===== ======== ===============================================
lightning  Euler, "trailing" timesteps        4    0        ByteDance/SDXL-Lightning card (2/4/8-step files)
hyper      DDIM, "trailing" timesteps         8    0        ByteDance/Hyper-SD card (N-step SDXL LoRAs)
dmd2       LCM sampler at 999, 749, 499, 249  4    0        tianweiy/DMD2 card (4-step UNet and LoRA)
lcm        LCM sampler                        4    1 (off)  latent-consistency/lcm-lora-sdxl card (2-8 steps)
========== ================================ ===== ======== ===============================================

The kind is given rather than guessed: a weights file does not say how it was distilled (a Lightning LoRA and a
Hyper-SD LoRA have the same keys), and the wrong sampler gives bad frames without any error. Whether the file is a
LoRA or whole UNet weights *is* read from the weights: a LoRA's tensor names contain ``lora`` (diffusers' own
check), a UNet folder has a ``config.json``. A LoRA is fused into the UNet at ``lora_scale`` and its adapter
layers removed, so the renderer runs (and compiles) a plain UNet; whole UNet weights replace the UNet's weights
(a safetensors state dict) or the UNet itself (a diffusers UNet folder, e.g. one with a different time embedding).
Pickled checkpoints (``.bin``, ``.pt``) are refused: loading them can run code.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ..argtypes import looks_like_path
from ..errors import ConfigError
from .settings import DISTILLED_KINDS, FORMATS, DistilledRecipe, DistilledWeights
from .speed import short_error

logger = logging.getLogger(__name__)

LORA_FILE = "pytorch_lora_weights.safetensors"  # what diffusers' save_lora_weights writes


# ------------------------------------------------------------------------------------------ resolving


def _refuse_pickle(name: str) -> None:
    if name.endswith((".bin", ".pt", ".pth", ".ckpt")):
        raise ConfigError(f"--distilled-weights {name} is a pickled checkpoint, which can run code when loaded; "
                          "use the .safetensors file the authors publish beside it.")


def _is_unet_folder(folder: Path) -> bool:
    config = folder / "config.json"
    if not config.is_file():
        return False
    try:
        return "UNet" in str(json.loads(config.read_text(encoding="utf-8")).get("_class_name", ""))
    except (OSError, ValueError):
        return False


def _download(settings: DistilledWeights, filename: str) -> Path:
    """One file of the weights' Hub repository, through the Hub cache; one sentence when it cannot be had."""
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(settings.weights, filename, subfolder=settings.subfolder or None))
    except Exception as err:  # hub raises many types; the user needs one sentence
        raise ConfigError(f"cannot fetch {filename} of the distilled weights {settings.weights!r} ({short_error(err)}); "
                          "check --distilled-weights, --distilled-weight-name and --distilled-subfolder.") from None


def resolve_weights(settings: DistilledWeights) -> tuple[str, Path]:
    """``(format, local path)``: a ``.safetensors`` file (``lora`` or ``unet``) or a UNet folder (``unet``)."""
    ref = settings.weights
    if settings.weight_name:
        _refuse_pickle(settings.weight_name)
    local = Path(ref).expanduser()
    if local.exists():
        base = local / settings.subfolder if local.is_dir() else local
        if base.is_file():
            target = base
        elif settings.weight_name:
            target = base / settings.weight_name
        elif _is_unet_folder(base) or _is_unet_folder(base / "unet"):
            return "unet", base if _is_unet_folder(base) else base / "unet"
        elif (base / LORA_FILE).is_file():
            target = base / LORA_FILE
        else:
            files = sorted(base.glob("*.safetensors"))
            if len(files) != 1:
                raise ConfigError(f"--distilled-weights {ref} holds {len(files)} .safetensors files and no UNet "
                                  "config.json; name the one to load with --distilled-weight-name.")
            target = files[0]
        _refuse_pickle(target.name)
        if not target.is_file():
            raise ConfigError(f"--distilled-weights {ref} has no file {target.name}; check --distilled-weight-name.")
        return _format_of_file(target, settings), target
    if looks_like_path(ref) or ref.endswith(".safetensors"):
        raise ConfigError(f"--distilled-weights {ref} does not exist; give a .safetensors file, a folder or a Hub id.")
    _refuse_pickle(ref)
    if settings.weight_name:
        target = _download(settings, settings.weight_name)
        return _format_of_file(target, settings), target
    if settings.format != "lora":
        try:
            config = _download(settings, "config.json")
        except ConfigError:
            config = None
        if config is not None:
            return "unet", config.parent
    return "lora", _download(settings, LORA_FILE)


def _format_of_file(path: Path, settings: DistilledWeights) -> str:
    """``lora`` when the file's tensor names contain "lora" (diffusers' own test), else ``unet``; the user's choice wins."""
    if path.suffix != ".safetensors":
        _refuse_pickle(path.name)
        raise ConfigError(f"--distilled-weights {path.name} is not a .safetensors file; give the safetensors weights.")
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            keys = list(handle.keys())
    except Exception as err:  # safetensors raises its own error types for corrupt headers
        raise ConfigError(f"--distilled-weights {path} is not a readable safetensors file ({err}).") from None
    found = "lora" if any("lora" in key for key in keys) else "unet"
    if settings.format != "auto" and settings.format != found:
        raise ConfigError(f"--distilled-format {settings.format} was given, but {path.name} holds "
                          f"{'LoRA' if found == 'lora' else 'whole UNet'} weights; leave --distilled-format at auto.")
    return found


# ------------------------------------------------------------------------------------------- loading


def load_distilled_weights(pipe, settings: DistilledWeights) -> str:
    """Put the distilled weights into ``pipe`` (an SDXL pipeline); return the format used (``lora`` or ``unet``).

    A LoRA is fused into the UNet and its adapter layers unloaded; UNet weights replace the UNet's. Errors are one
    sentence (:class:`ConfigError`).
    """
    if getattr(pipe, "unet", None) is None or not hasattr(pipe, "load_lora_weights"):
        raise ConfigError(f"distilled few-step weights are for SDXL UNet pipelines, not {type(pipe).__name__}.")
    fmt, path = resolve_weights(settings)
    try:
        if fmt == "lora":
            pipe.load_lora_weights(str(path), adapter_name="distilled")
            pipe.fuse_lora(components=["unet"], lora_scale=settings.lora_scale, adapter_names=["distilled"])
            pipe.unload_lora_weights()
        elif path.is_dir():
            _replace_unet(pipe, path)
        else:
            _load_unet_state(pipe.unet, path, settings)
    except ConfigError:
        raise
    except Exception as err:  # diffusers/peft/torch raise many types for weights of another model
        logger.debug("loading the distilled weights failed", exc_info=True)
        raise ConfigError(f"cannot load the distilled weights {settings.weights!r} into this UNet ({short_error(err)}); "
                          "they must be distilled from this base model (SDXL 1.0 for the published ones).") from None
    logger.info("loaded distilled %s weights (%s) from %s", settings.kind, fmt, path)
    return fmt


def _load_unet_state(unet, path: Path, settings: DistilledWeights) -> None:
    """Whole UNet weights from a safetensors state dict, which must name exactly this UNet's tensors."""
    from safetensors.torch import load_file

    state = load_file(str(path))
    expected = set(unet.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        example = (missing or unexpected)[0]
        raise ConfigError(f"the distilled weights {settings.weights!r} do not fit this UNet ({len(missing)} of its tensors "
                          f"missing, {len(unexpected)} unknown ones, e.g. {example}); they must be whole UNet weights "
                          "distilled from this base model (SDXL 1.0 for the published ones).")
    unet.load_state_dict(state, strict=True)


def _replace_unet(pipe, folder: Path) -> None:
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(str(folder), dtype=pipe.unet.dtype)
    pipe.unet = unet.eval()


__all__ = ["DISTILLED_KINDS", "DistilledRecipe", "DistilledWeights", "FORMATS", "load_distilled_weights",
           "resolve_weights"]
