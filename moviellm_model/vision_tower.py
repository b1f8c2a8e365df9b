"""Load the EVA vision tower of a saved LLaMA-VID checkpoint alone, without reading the language model.

Feature extraction (``moviellm export llamavid --model``, benchmarks) needs only the ~1 B-parameter tower of a
~7 B checkpoint: this reads the config, the image processor and the safetensors entries of the tower, and from the
Hub fetches only the shards that hold them.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open

from .configuration_llamavid import LlamaVidConfig
from .image_processing_llamavid import LlamaVidImageProcessor
from .modeling_llamavid import LlamaVidVisionModel

__all__ = ["checkpoint_folder", "load_vision_tower"]

#: Where the tower's weights sit in a checkpoint of `LlamaVidForConditionalGeneration` / `LlamaVidModel`.
_TOWER_PREFIXES = ("model.vision_model.", "vision_model.")


def checkpoint_folder(model: str | Path, weights: str = "vision") -> Path:
    """A local folder holding what is needed of checkpoint `model` (a folder, or a Hub id fetched into the cache).

    With `weights="vision"`, only the config, the image processor config and the shards holding the tower are
    fetched from the Hub. Raises `OSError` when the Hub cannot give them.
    """
    path = Path(model)
    if path.is_dir():
        return path
    from huggingface_hub import hf_hub_download, snapshot_download
    from huggingface_hub.errors import EntryNotFoundError

    try:  # the index says which shards hold the tower; fetch only those
        index = json.loads(Path(hf_hub_download(str(model), "model.safetensors.index.json")).read_text())
        shards = sorted({f for k, f in index["weight_map"].items() if weights != "vision" or _is_tower_key(k)})
        patterns = ["config.json", "preprocessor_config.json", "model.safetensors.index.json", *shards]
    except EntryNotFoundError:
        patterns = ["config.json", "preprocessor_config.json", "model.safetensors"]
    return Path(snapshot_download(str(model), allow_patterns=patterns))


def _is_tower_key(key: str) -> bool:
    return key.startswith(_TOWER_PREFIXES)


def _tower_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    index = folder / "model.safetensors.index.json"
    if index.exists():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (folder / "model.safetensors").exists():
        files = ["model.safetensors"]
    else:
        raise ValueError(f"{folder} holds no model.safetensors; save the checkpoint with save_pretrained (safetensors).")
    state = {}
    for name in files:
        if not (folder / name).exists():
            continue  # a shard without tower weights that was not fetched
        with safe_open(folder / name, framework="pt") as handle:
            for key in handle.keys():
                for prefix in _TOWER_PREFIXES:
                    if key.startswith(prefix):
                        state[key[len(prefix):]] = handle.get_tensor(key)
    if not state:
        raise ValueError(f"{folder} holds no vision tower weights (keys model.vision_model.*).")
    return state


def load_vision_tower(
    model: str | Path,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[LlamaVidVisionModel, LlamaVidImageProcessor]:
    """The frozen EVA tower of checkpoint `model` (folder or Hub id) in eval mode, with its image processor.

    Raises `ValueError` when `model` is not a LLaMA-VID checkpoint or its tower weights do not fit its config, and
    `OSError` when it cannot be read or fetched.
    """
    folder = checkpoint_folder(model)
    config = LlamaVidConfig.from_pretrained(folder)
    tower = LlamaVidVisionModel(config.vision_config)
    missing, unexpected = tower.load_state_dict(_tower_state_dict(folder), strict=False)
    if missing or unexpected:
        raise ValueError(
            f"the vision tower weights in {model} do not fit its config ({len(missing)} missing, {len(unexpected)} "
            f"unexpected, e.g. {(missing or unexpected)[0]})."
        )
    tower = tower.to(device=device, dtype=dtype).eval().requires_grad_(False)
    size = config.vision_config.image_size
    if (folder / "preprocessor_config.json").exists():
        processor = LlamaVidImageProcessor.from_pretrained(folder)
    else:
        processor = LlamaVidImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    return tower, processor
