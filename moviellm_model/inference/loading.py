"""Load a LLaMA-VID checkpoint and its processor for inference (a folder or a Hub id), with one-sentence errors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from moviellm_data.errors import ConfigError

from .. import LlamaVidConfig, LlamaVidForConditionalGeneration, LlamaVidProcessor
from ..fast_paths import enable_fast_inference
from .hub import hub_snapshot

__all__ = ["DTYPES", "LoadedModel", "load_model"]

#: `--dtype` values; "auto" is float32 on the CPU (where half-precision matrix products are slow or missing) and the
#: checkpoint's own dtype on accelerators.
DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass
class LoadedModel:
    """A model in eval mode, its processor, and what to record about them in every prediction."""

    model: LlamaVidForConditionalGeneration
    processor: LlamaVidProcessor
    name_or_path: str
    revision: str | None

    @property
    def dtype(self) -> str:
        return str(self.model.dtype).removeprefix("torch.")

    def record(self) -> dict[str, Any]:
        """The `model` object of a prediction line."""
        return {"name_or_path": self.name_or_path, "revision": self.revision, "dtype": self.dtype}


def _looks_local(name: str) -> bool:
    """Whether `name` can only be a path (a Hub id is exactly ORG/NAME and never starts with '.', '/' or '~')."""
    return name.startswith((".", "/", "~")) or name.count("/") != 1 or Path(name).exists()


def _first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return lines[0][:200] if lines else type(error).__name__


#: What a checkpoint folder holds (weights, configs, tokenizers, chat template); other files of a repository are
#: not fetched.
_CHECKPOINT_FILES = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"]


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(
    name_or_path: str,
    revision: str | None = None,
    dtype: str = "auto",
    device: str | None = None,
    device_map: str | dict | None = None,
    attn_implementation: str | None = None,
    fast: bool = True,
    compile: bool = True,
) -> LoadedModel:
    """Load `LlamaVidForConditionalGeneration` + `LlamaVidProcessor` from a folder or a Hub id, in eval mode.

    Args:
        name_or_path: a folder saved by `save_pretrained` (model and processor) or a Hub model id.
        revision: branch, tag or commit of a Hub id (the commit it resolves to is recorded).
        dtype: one of `DTYPES`.
        device: torch device (default: cuda when available, else cpu); ignored with `device_map`.
        device_map: e.g. "auto" to spread a large model over the available GPUs (needs accelerate).
        attn_implementation: "sdpa" (default), "eager" or "flash_attention_2".
        fast: on a CUDA GPU, switch on the answering speed options (`fast_paths.enable_fast_inference`).
        compile: with `fast`, also compile the decoder for prefills (worth it over many videos).

    Raises `ConfigError` (one sentence) for a missing folder, a file, or something that is not a LLaMA-VID checkpoint.
    """
    name = str(name_or_path)
    if dtype not in DTYPES:
        raise ConfigError(f"--dtype must be one of {', '.join(DTYPES)}, not {dtype!r}.")
    local = _looks_local(name)
    if local:
        path = Path(name).expanduser()
        if not path.exists():
            raise ConfigError(f"model folder {name} does not exist; give a folder saved by save_pretrained or a Hub id "
                              "(ORG/NAME).")
        if not path.is_dir():
            raise ConfigError(f"--model {name} is a file; give the checkpoint's folder (with config.json) instead.")
        if not (path / "config.json").is_file():
            raise ConfigError(f"model folder {name} holds no config.json; give a folder saved by "
                              "LlamaVidForConditionalGeneration.save_pretrained.")
        name, revision = str(path), None
    else:
        path = hub_snapshot(name, "model", revision, allow_patterns=_CHECKPOINT_FILES)
        revision = path.name  # the snapshot folder is named by the commit the Hub served: what was read
        name = str(path)
    device = device or default_device()
    if dtype == "auto":
        torch_dtype: Any = torch.float32 if device_map is None and torch.device(device).type == "cpu" else "auto"
    else:
        torch_dtype = getattr(torch, dtype)
    try:
        config = LlamaVidConfig.from_pretrained(name)
    except (OSError, ValueError) as error:
        raise ConfigError(f"cannot read a LLaMA-VID config from {name_or_path} ({_first_line(error)}); check "
                          "--model.") from None
    if getattr(config, "model_type", None) != LlamaVidConfig.model_type:
        raise ConfigError(f"{name_or_path} is a {config.model_type!r} checkpoint, not LLaMA-VID; convert it with "
                          "`moviellm convert-llamavid` first.")
    kwargs: dict[str, Any] = {"dtype": torch_dtype}
    if device_map is not None:
        kwargs["device_map"] = device_map
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    try:
        model = LlamaVidForConditionalGeneration.from_pretrained(name, **kwargs)
        processor = LlamaVidProcessor.from_pretrained(name)
    except (OSError, ValueError) as error:
        raise ConfigError(f"cannot load the LLaMA-VID checkpoint {name} ({_first_line(error)}); it needs the model "
                          "weights, the tokenizers and the processor config saved next to config.json.") from None
    if device_map is None:
        model = model.to(device)
    model.eval().requires_grad_(False)
    if fast and device_map is None:
        enable_fast_inference(model, compile=compile)
    return LoadedModel(model=model, processor=processor, name_or_path=str(name_or_path), revision=revision)
