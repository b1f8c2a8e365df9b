"""Convert an original LLaMA-VID or MovieLLM checkpoint into a self-contained transformers checkpoint.

Inputs (llamavid-spec.md, sections 1.11 and 2):

- `SRC`: the released folder: `pytorch_model-0000k-of-0000n.bin` shards + `pytorch_model.bin.index.json` (or a single
  `pytorch_model.bin`, or safetensors), `config.json` with the `mm_*` keys (model_type "llava"), the Llama tokenizer
  files and, usually, `generation_config.json`.
- `--vision-tower`: `eva_vit_g.pth` (40 EVA-CLIP-g blocks; the original builds 39 and loads with strict=False).
- `--qformer`: `instruct_blip_vicuna7b_trimmed.pth`. The original reads the Q-Former from the checkpoint shards at
  inference, so these weights are only used when the checkpoint has none (they are checked either way).
- `--bert`: `bert-base-uncased`, a local folder or a Hub id (the original fetched it from the Hub), for the Q-Former
  tokenizer (plus `[DEC]`) and configuration.

What the original did and transformers 5 would do differently is written out explicitly: the Llama tokenizer's
`legacy` behaviour (transformers 4.31 treated a release without the key as legacy), each part's source precision
(a float16 EVA tower is not rounded through the LLM's bfloat16), the image size from the image processor folder's
`preprocessor_config.json`, and the release's sampling settings in `generation_config.json`.

Output: `model-*.safetensors` + index, `config.json` (model_type "llamavid"), `generation_config.json`, the Llama
tokenizer with `<image>`/`<video>` placeholders, the Q-Former tokenizer in `qformer_tokenizer/`,
`processor_config.json` and `chat_template.jinja`. `from_pretrained` needs nothing else.

Every key of every input is either mapped or listed with the reason it is not needed; a missing piece stops the
conversion with one sentence. Checkpoints are read with `torch.load(weights_only=True)`, never with pickle.

Usage: `python -m moviellm_model.convert_llamavid_original SRC --vision-tower eva_vit_g.pth
--qformer instruct_blip_vicuna7b_trimmed.pth --bert bert-base-uncased --out DST`
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .convert_llamavid_options import DESCRIPTION, add_arguments, build_parser

__all__ = [
    "DESCRIPTION",
    "ConversionError",
    "ConversionReport",
    "add_arguments",
    "build_parser",
    "convert_llamavid_checkpoint",
    "main",
    "run_from_args",
]


class ConversionError(ValueError):
    """A user-facing conversion problem (missing file, wrong folder, incompatible weights): one clear sentence."""


@dataclass
class ConversionReport:
    """What was converted: per source, how many tensors were mapped, and every ignored key group with its reason."""

    output_dir: str
    mapped: dict[str, int] = field(default_factory=dict)
    ignored: dict[str, list[str]] = field(default_factory=dict)  # reason -> keys
    notes: list[str] = field(default_factory=list)

    def ignore(self, reason: str, keys: Iterable[str]) -> None:
        keys = sorted(keys)
        if keys:
            self.ignored.setdefault(reason, []).extend(keys)

    def summary(self) -> str:
        lines = [f"Converted checkpoint written to {self.output_dir}"]
        for source, count in self.mapped.items():
            lines.append(f"  mapped {count:5d} tensors from {source}")
        for reason, keys in self.ignored.items():
            example = keys[0] if len(keys) == 1 else f"{keys[0]}, ..."
            lines.append(f"  ignored {len(keys):4d} tensors ({example}): {reason}")
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------------------------------


def _torch_load(path: Path, legacy_pickle: bool = False) -> dict[str, Any]:
    if not path.is_file():
        raise ConversionError(f"{path} does not exist.")
    if legacy_pickle:  # explicit opt-in: runs the file's pickle code
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as error:  # noqa: BLE001
            raise ConversionError(f"{path} could not be read as a PyTorch checkpoint ({error}).") from None
    try:
        with warnings.catch_warnings():  # torch warns about newer pickle protocols before refusing them: one sentence
            warnings.simplefilter("ignore", UserWarning)
            try:
                return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as error:  # legacy (non-zip) files cannot be memory-mapped
                if "mmap" not in str(error):
                    raise
                return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - turned into one sentence for the user
        text = str(error)
        refused = _SAFE_LOADER_REFUSAL.search(text) if _is_torch_save_file(path) else None
        if refused is not None:
            blocked = _BLOCKED_GLOBAL.search(text)
            warning = (f" It asks for {blocked.group(1)}, which no checkpoint needs: it may be malicious, do not load "
                       "it unless you know why." if blocked else "")
            raise ConversionError(
                f"{path} holds Python objects besides tensors, which could only be read by running its pickle code "
                f"({refused.group(0).strip()}); if you trust the file, rerun with --legacy-pickle.{warning}"
            ) from None
        detail = text.split("WeightsUnpickler error:", 1)[-1].strip().splitlines()
        detail = detail[0].strip() if detail and detail[0].strip() else type(error).__name__
        raise ConversionError(f"{path} could not be read as a PyTorch checkpoint ({detail}).") from None


def _is_torch_save_file(path: Path) -> bool:
    """A file torch.save wrote: a zip archive (torch >= 1.6) or a legacy pickle stream (it starts with PROTO, 0x80).

    Anything else that the weights-only loader refuses is simply not a checkpoint (its bytes read as unknown opcodes).
    """
    import zipfile

    with open(path, "rb") as handle:
        if handle.read(1) == b"\x80":
            return True
        handle.seek(0)
        return zipfile.is_zipfile(handle)


# How torch's weights-only loader says a file holds more than tensors. The wording changes between releases: "Unsupported
# global: GLOBAL x.y was not an allowed global" (2.4-2.12), "Trying to load unsupported GLOBAL os.system whose module os
# is blocked" (2.13), "Unsupported operand 149" (an opcode of a newer pickle protocol).
_SAFE_LOADER_REFUSAL = re.compile(r"unsupported global:? (?:GLOBAL )?[\w.]+|unsupported operand \d+", re.IGNORECASE)
_BLOCKED_GLOBAL = re.compile(r"GLOBAL (\S+) whose module \S+ is blocked")


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as error:  # noqa: BLE001
        raise ConversionError(f"{path} could not be read as a safetensors file ({error}).") from None


def read_original_checkpoint(src: Path, legacy_pickle: bool = False) -> dict[str, torch.Tensor]:
    """All tensors of an original checkpoint folder (sharded or single file, .bin or .safetensors)."""

    def torch_loader(path):
        return _torch_load(path, legacy_pickle)

    for index_name, loader in (
        ("model.safetensors.index.json", _load_safetensors),
        ("pytorch_model.bin.index.json", torch_loader),
    ):
        index_path = src / index_name
        if index_path.is_file():
            try:
                weight_map = json.loads(index_path.read_text())["weight_map"]
            except (ValueError, KeyError):
                raise ConversionError(f"{index_path} is not a valid weight index (no 'weight_map').") from None
            state: dict[str, torch.Tensor] = {}
            for shard in sorted(set(weight_map.values())):
                state.update(loader(src / shard))
            missing = sorted(set(weight_map) - set(state))
            if missing:
                raise ConversionError(f"The shards of {src} lack {len(missing)} indexed tensors, e.g. {missing[0]}.")
            return state
    for name, loader in (("model.safetensors", _load_safetensors), ("pytorch_model.bin", torch_loader)):
        if (src / name).is_file():
            return dict(loader(src / name))
    raise ConversionError(
        f"{src} has no weights: expected pytorch_model.bin.index.json with its shards, pytorch_model.bin or "
        "model.safetensors."
    )


def _state_dict_of(payload: Any, path: Path, nested_key: str | None = None) -> dict[str, torch.Tensor]:
    if nested_key is not None and isinstance(payload, dict) and nested_key in payload:
        payload = payload[nested_key]
    if not isinstance(payload, dict) or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise ConversionError(f"{path} does not hold a flat dictionary of tensors.")
    return payload


# ---------------------------------------------------------------------------------------------------------------------
# Mapping
# ---------------------------------------------------------------------------------------------------------------------

_EVA_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")
_EVA_BLOCK_MAP = {
    "norm1.weight": "norm1.weight",
    "norm1.bias": "norm1.bias",
    "attn.qkv.weight": "attn.qkv.weight",
    "attn.q_bias": "attn.q_bias",
    "attn.v_bias": "attn.v_bias",
    "attn.proj.weight": "attn.proj.weight",
    "attn.proj.bias": "attn.proj.bias",
    "norm2.weight": "norm2.weight",
    "norm2.bias": "norm2.bias",
    "mlp.fc1.weight": "mlp.fc1.weight",
    "mlp.fc1.bias": "mlp.fc1.bias",
    "mlp.fc2.weight": "mlp.fc2.weight",
    "mlp.fc2.bias": "mlp.fc2.bias",
}
_EVA_TOP_MAP = {
    "cls_token": "embeddings.class_embedding",
    "pos_embed": "embeddings.position_embedding",
    "patch_embed.proj.weight": "embeddings.patch_embedding.weight",
    "patch_embed.proj.bias": "embeddings.patch_embedding.bias",
}


def interpolate_position_embedding(pos_embed: torch.Tensor, grid: int) -> torch.Tensor:
    """`interpolate_pos_embed` of the original: bicubic resize of the patch positions, class position kept."""
    count = pos_embed.shape[-2] - 1
    old = int(round(count**0.5))
    if old == grid:
        return pos_embed
    extra, tokens = pos_embed[:, :1], pos_embed[:, 1:].float()
    tokens = tokens.reshape(-1, old, old, pos_embed.shape[-1]).permute(0, 3, 1, 2)
    tokens = F.interpolate(tokens, size=(grid, grid), mode="bicubic", align_corners=False)
    tokens = tokens.permute(0, 2, 3, 1).flatten(1, 2).to(pos_embed.dtype)
    return torch.cat((extra, tokens), dim=1)


def map_eva(
    eva: dict[str, torch.Tensor], num_layers: int, image_size: int, report: ConversionReport, source: str,
    key_prefix: str = "",
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """EVA keys (`eva_vit_g.pth` names) -> `model.vision_model.*`, keeping the first `num_layers` blocks.

    Returns the mapped tensors and the source keys (with `key_prefix`) that are not needed; both are reported.
    """
    out: dict[str, torch.Tensor] = {}
    dropped_blocks, unknown = [], []
    for key, value in eva.items():
        if key in _EVA_TOP_MAP:
            if key == "pos_embed":
                patch = eva["patch_embed.proj.weight"].shape[-1]
                value = interpolate_position_embedding(value, image_size // patch)
            out["model.vision_model." + _EVA_TOP_MAP[key]] = value
            continue
        match = _EVA_BLOCK.match(key)
        if match and match.group(2) in _EVA_BLOCK_MAP:
            layer = int(match.group(1))
            if layer >= num_layers:
                dropped_blocks.append(key_prefix + key)
            else:
                out[f"model.vision_model.layers.{layer}.{_EVA_BLOCK_MAP[match.group(2)]}"] = value
            continue
        unknown.append(key_prefix + key)
    report.ignore(
        f"EVA blocks {num_layers} and later of {source}: LLaMA-VID (like BLIP-2) builds {num_layers} blocks",
        dropped_blocks,
    )
    report.ignore(f"not part of the EVA tower LLaMA-VID builds (the original loads {source} with strict=False)", unknown)
    return out, dropped_blocks + unknown


def _qformer_key(key: str) -> str:
    """LAVIS BERT Q-Former key (after `bert.`) -> InstructBlipQFormerModel key."""
    key = key.replace("embeddings.LayerNorm.", "embeddings.layernorm.")
    key = key.replace(".attention.self.", ".attention.attention.")
    key = key.replace(".crossattention.self.", ".crossattention.attention.")
    return key


def map_qformer_bert(weights: dict[str, torch.Tensor], prefix: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    """`<prefix>embeddings.*` / `<prefix>encoder.layer.*` -> `model.token_generator.qformer.*`.

    Returns the mapped tensors and the source keys that are not needed (the `position_ids` buffer).
    """
    out, buffers = {}, []
    for key, value in weights.items():
        if not key.startswith(prefix):
            continue
        rest = key[len(prefix) :]
        if rest == "embeddings.position_ids":
            buffers.append(key)
            continue
        out["model.token_generator.qformer." + _qformer_key(rest)] = value
    return out, buffers


# ---------------------------------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------------------------------


def _text_config(original: dict[str, Any], vocab_size: int) -> dict[str, Any]:
    rope_theta = float(original.get("rope_theta", 10000.0))
    rope = {"rope_type": "default", "rope_theta": rope_theta}
    scaling = original.get("rope_scaling")
    if scaling:
        kind = scaling.get("rope_type", scaling.get("type"))
        if kind != "linear":
            raise ConversionError(f"config.json has rope_scaling type {kind!r}; LLaMA-VID releases use 'linear'.")
        rope = {"rope_type": "linear", "factor": float(scaling["factor"]), "rope_theta": rope_theta}
    heads = original["num_attention_heads"]
    return {
        "vocab_size": vocab_size,
        "hidden_size": original["hidden_size"],
        "intermediate_size": original["intermediate_size"],
        "num_hidden_layers": original["num_hidden_layers"],
        "num_attention_heads": heads,
        "num_key_value_heads": original.get("num_key_value_heads", heads),
        "hidden_act": original.get("hidden_act", "silu"),
        "max_position_embeddings": original.get("max_position_embeddings", 4096),
        "rms_norm_eps": original.get("rms_norm_eps", 1e-5),
        "initializer_range": original.get("initializer_range", 0.02),
        "rope_parameters": rope,
        "pad_token_id": original.get("pad_token_id", 0),
        "bos_token_id": original.get("bos_token_id", 1),
        "eos_token_id": original.get("eos_token_id", 2),
        "tie_word_embeddings": bool(original.get("tie_word_embeddings", False)),
        "attention_bias": bool(original.get("attention_bias", False)),
    }


def _image_processor_folder(original: dict[str, Any], src: Path, given: str | Path | None) -> Path | None:
    """The folder the original built its `CLIPImageProcessor` from: `--image-processor`, else the config's
    `image_processor` path as written, relative to the checkpoint folder, or its last part inside the checkpoint."""
    if given is not None:
        if not (Path(given) / "preprocessor_config.json").is_file():
            raise ConversionError(f"--image-processor {given} has no preprocessor_config.json; give the CLIP processor "
                                  "folder the original used (llamavid/processor/clip-patch14-224 or -336).")
        return Path(given)
    named = str(original.get("image_processor") or "")
    if not named:
        return None
    for candidate in (Path(named), src / named, src / Path(named).name):
        if (candidate / "preprocessor_config.json").is_file():
            return candidate
    return None


def _image_size_from(original: dict[str, Any], src: Path, given: str | Path | None, report: ConversionReport) -> int:
    """The image size the original used: `size.shortest_edge` of the image processor's preprocessor_config.json
    (`eva_vit.py` reads it there); without that folder, 224 (336 when its name says so), with a note."""
    folder = _image_processor_folder(original, src, given)
    if folder is None:
        named = str(original.get("image_processor") or "")
        guess = 336 if "336" in named else 224
        report.notes.append(f"the image processor folder {named or '(none named)'} was not found, so the image size "
                            f"{guess} was assumed from its name; pass --image-processor DIR (or --image-size) to be "
                            "sure.")
        return guess
    path = folder / "preprocessor_config.json"
    try:
        processor = json.loads(path.read_text())
    except ValueError:
        raise ConversionError(f"{path} is not valid JSON.") from None
    size, crop = processor.get("size"), processor.get("crop_size")
    value = size.get("shortest_edge") if isinstance(size, dict) else size
    if value is None:
        value = crop.get("height") if isinstance(crop, dict) else crop
    if not isinstance(value, int) or value <= 0:
        raise ConversionError(f"{path} has no image size (size.shortest_edge or crop_size).")
    report.notes.append(f"image size {value} read from {path}.")
    return value


def _qformer_config(state: dict[str, torch.Tensor], prefix: str, bert_config: dict[str, Any]) -> dict[str, Any]:
    words = state[prefix + "embeddings.word_embeddings.weight"]
    hidden = words.shape[1]
    layers = sorted({int(m.group(1)) for k in state if (m := re.match(re.escape(prefix) + r"encoder\.layer\.(\d+)\.", k))})
    cross = [i for i in layers if f"{prefix}encoder.layer.{i}.crossattention.self.key.weight" in state]
    if not layers or not cross:
        raise ConversionError("The Q-Former weights have no encoder layers with cross-attention.")
    frequency = cross[1] - cross[0] if len(cross) > 1 else max(layers) + 1
    if cross != list(range(0, max(layers) + 1, frequency)):
        raise ConversionError(f"The Q-Former has cross-attention in layers {cross}, not every {frequency}th layer.")
    heads = int(bert_config.get("num_attention_heads", hidden // 64))
    return {
        "vocab_size": words.shape[0],
        "hidden_size": hidden,
        "num_hidden_layers": len(layers),
        "num_attention_heads": heads,
        "intermediate_size": state[f"{prefix}encoder.layer.0.intermediate_query.dense.weight"].shape[0],
        "hidden_act": bert_config.get("hidden_act", "gelu"),
        "hidden_dropout_prob": bert_config.get("hidden_dropout_prob", 0.1),
        "attention_probs_dropout_prob": bert_config.get("attention_probs_dropout_prob", 0.1),
        "max_position_embeddings": state[prefix + "embeddings.position_embeddings.weight"].shape[0],
        "initializer_range": bert_config.get("initializer_range", 0.02),
        "layer_norm_eps": bert_config.get("layer_norm_eps", 1e-12),
        "pad_token_id": bert_config.get("pad_token_id", 0),
        "cross_attention_frequency": frequency,
        "encoder_hidden_size": state[f"{prefix}encoder.layer.{cross[0]}.crossattention.self.key.weight"].shape[1],
    }


# ---------------------------------------------------------------------------------------------------------------------
# Tokenizers
# ---------------------------------------------------------------------------------------------------------------------


_TOKENIZER_FILES = (
    "tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
)


def _load_llama_tokenizer(src: Path, report: ConversionReport | None = None):
    """The release's Llama tokenizer, with the `legacy` behaviour the original had.

    `legacy` decides how text after a special token is split (`</s>▁USER` vs `</s>USER` in a multi-turn prompt).
    transformers 4.31, which the releases were made with, treated a Llama tokenizer as legacy when its
    tokenizer_config.json has no `legacy` key; transformers 5 does not. The converted tokenizer states the original's
    behaviour explicitly, so it tokenises as the original did whatever transformers loads it.
    """
    from transformers import AutoTokenizer

    if not (src / "tokenizer.json").is_file() and not (src / "tokenizer.model").is_file():
        raise ConversionError(f"{src} has no Llama tokenizer (tokenizer.model or tokenizer.json).")
    if not (src / "tokenizer.json").is_file():
        try:
            import google.protobuf  # noqa: F401
            import sentencepiece  # noqa: F401
        except ImportError:
            raise ConversionError(
                f"{src} ships its Llama tokenizer as a SentencePiece model (tokenizer.model); reading it needs "
                "`pip install sentencepiece protobuf`."
            ) from None
    legacy = _release_legacy_flag(src, report)
    # Load from a copy of the tokenizer files only: the folder's config.json (model_type "llava", 4.31 keys) must not
    # be parsed by AutoConfig.
    with tempfile.TemporaryDirectory() as folder:
        for name in _TOKENIZER_FILES:
            if (src / name).is_file():
                shutil.copy(src / name, Path(folder) / name)
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, legacy=legacy)
        except Exception as error:  # noqa: BLE001
            raise ConversionError(f"The Llama tokenizer in {src} could not be loaded ({error}).") from None
    tokenizer.init_kwargs["legacy"] = legacy  # written to tokenizer_config.json: no default decides it later
    return tokenizer


def _release_legacy_flag(src: Path, report: ConversionReport | None) -> bool:
    """The release's `legacy` setting; True (transformers 4.31's behaviour) when its tokenizer_config.json has none."""
    path = src / "tokenizer_config.json"
    try:
        config = json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        raise ConversionError(f"{path} is not valid JSON.") from None
    legacy = config.get("legacy")
    if legacy is None:
        if report is not None:
            report.notes.append("tokenizer_config.json has no `legacy` key: transformers 4.31, which the release was "
                                "made with, then tokenised as legacy (text after </s> starts with ▁), so the converted "
                                "tokenizer is written with legacy=true.")
        return True
    return bool(legacy)


_BERT_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "config.json")


def _bert_folder(bert: str | Path) -> Path:
    """A local bert-base-uncased folder, or the files of a Hub id (as the original fetched `bert-base-uncased`)."""
    path = Path(bert)
    if path.is_dir():
        return path
    text = str(bert)
    if path.exists() or text.startswith((".", "/", "~")) or text.count("/") > 1 or not text.strip():
        raise ConversionError(f"--bert {bert} is not a folder (expected a bert-base-uncased folder with vocab.txt, "
                              "or a Hub id such as google-bert/bert-base-uncased).")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(text, allow_patterns=list(_BERT_FILES)))
    except Exception as error:  # noqa: BLE001 - any failure to fetch is the id, the network or the token
        detail = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise ConversionError(f"--bert {bert} is neither a local folder nor a model the Hub gave ({detail}); give a "
                              "bert-base-uncased folder or check the id (and HF_ENDPOINT / your token).") from None


def _load_bert_tokenizer(bert: Path):
    from transformers import AutoTokenizer, BertTokenizer

    if not bert.is_dir():
        raise ConversionError(f"--bert {bert} is not a folder (expected a bert-base-uncased folder with vocab.txt).")
    if not (bert / "vocab.txt").is_file() and not (bert / "tokenizer.json").is_file():
        raise ConversionError(f"--bert {bert} has no vocab.txt or tokenizer.json (expected bert-base-uncased).")
    try:
        if (bert / "tokenizer_config.json").is_file() or (bert / "tokenizer.json").is_file():
            tokenizer = AutoTokenizer.from_pretrained(str(bert))
        else:
            tokenizer = BertTokenizer.from_pretrained(str(bert), do_lower_case=True)
    except Exception as error:  # noqa: BLE001
        raise ConversionError(f"The BERT tokenizer in {bert} could not be loaded ({error}).") from None
    if tokenizer.bos_token != "[DEC]":
        tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    return tokenizer


# ---------------------------------------------------------------------------------------------------------------------
# The conversion: one function per section of the checkpoint, then configuration, checks and writing
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class _Mapping:
    """The state of one conversion: the original tensors, the converted ones, and the account of every source key."""

    src: Path
    state: dict[str, torch.Tensor]
    report: ConversionReport
    new: dict[str, torch.Tensor] = field(default_factory=dict)
    used: set[str] = field(default_factory=set)  # checkpoint keys that are accounted for
    ignored_src: set[str] = field(default_factory=set)  # ... of which not needed

    @property
    def src_name(self) -> str:
        return self.src.name or str(self.src)


def _read_original_config(src: Path, out: Path, bert, overwrite: bool) -> dict[str, Any]:
    """The original `config.json`, checked to be a released LLaMA-VID variant; the output folder checked to be free."""
    if not src.is_dir():
        raise ConversionError(f"{src} is not a folder; give the folder of the original LLaMA-VID checkpoint.")
    config_path = src / "config.json"
    if not config_path.is_file():
        raise ConversionError(f"{src} has no config.json; give the folder of the original LLaMA-VID checkpoint.")
    try:
        original = json.loads(config_path.read_text())
    except ValueError:
        raise ConversionError(f"{config_path} is not valid JSON.") from None
    if "mm_hidden_size" not in original and "mm_vision_tower" not in original:
        raise ConversionError(
            f"{config_path} has no mm_* keys, so {src} is not a LLaMA-VID checkpoint (a plain Llama/Vicuna folder?)."
        )
    if bert is None:
        raise ConversionError("--bert is required: the bert-base-uncased folder gives the Q-Former tokenizer.")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ConversionError(f"{out} is not empty; choose a new output folder or pass --overwrite.")
    projector_type = original.get("mm_projector_type", "linear")
    if projector_type not in ("linear", "identity") and not re.fullmatch(r"mlp\d+x_gelu", projector_type):
        raise ConversionError(f"mm_projector_type {projector_type!r} is not supported (linear, mlpNx_gelu, identity).")
    if original.get("mm_use_im_start_end") or original.get("mm_use_im_patch_token"):
        raise ConversionError(
            "The checkpoint uses mm_use_im_start_end/mm_use_im_patch_token, which the released LLaMA-VID models do not "
            "and this converter does not support."
        )
    bert_type = str(original.get("bert_type", "qformer_pretrain"))
    if "raw" in bert_type or "layer:" in bert_type:
        raise ConversionError(f"bert_type {bert_type!r} is not a released LLaMA-VID variant and is not supported.")
    return original


def map_language_model(m: _Mapping, projector_type: str) -> tuple[torch.dtype, torch.dtype]:
    """Llama decoder, head and content projector -> `model.language_model.*`, `lm_head`, `content_projector`.

    Returns the Llama weights' dtype and the dtype of the original's RoPE inverse frequencies.
    """
    state, new = m.state, m.new
    inv_freq_keys = [k for k in state if k.endswith("rotary_emb.inv_freq")]
    for key, value in state.items():
        if key.startswith("model.layers.") or key in ("model.embed_tokens.weight", "model.norm.weight"):
            if key.endswith("rotary_emb.inv_freq"):
                continue
            new["model.language_model." + key[len("model.") :]] = value
            m.used.add(key)
        elif key == "lm_head.weight":
            new["lm_head.weight"] = value
            m.used.add(key)
        elif key.startswith("model.mm_projector."):
            rest = key[len("model.mm_projector.") :]
            if projector_type == "linear":
                new[f"model.token_generator.content_projector.layers.0.{rest}"] = value
            else:
                index, name = rest.split(".", 1)
                new[f"model.token_generator.content_projector.layers.{int(index) // 2}.{name}"] = value
            m.used.add(key)
    if "model.embed_tokens.weight" not in state or "lm_head.weight" not in state:
        raise ConversionError(f"{m.src} lacks the Llama weights (model.embed_tokens.weight / lm_head.weight).")
    if not any(k.startswith("model.mm_projector.") for k in state) and projector_type != "identity":
        raise ConversionError(f"{m.src} has no model.mm_projector.* weights (the content projector).")
    m.report.ignore("RoPE inverse frequencies, recomputed by the model (see original_rope_precision)", inv_freq_keys)
    m.used.update(inv_freq_keys)
    m.ignored_src.update(inv_freq_keys)
    llm_dtype = state["model.embed_tokens.weight"].dtype
    inv_freq_dtype = state[inv_freq_keys[0]].dtype if inv_freq_keys else torch.float32
    return llm_dtype, inv_freq_dtype


_CONTEXT_PROJECTORS = {
    "model.vlm_att_projector.": "model.token_generator.context_query_projector.",
    "model.vlm_att_key_projector.": "model.token_generator.context_key_projector.",
    "model.vlm_att_val_projector.": "model.token_generator.context_projector.",
}


def map_context_projectors(m: _Mapping) -> None:
    """`vlm_att_{,key_,val_}projector` -> the token generator's context query, key and value projectors."""
    for key, value in m.state.items():
        for old, target in _CONTEXT_PROJECTORS.items():
            if key.startswith(old):
                m.new[target + key[len(old) :]] = value
                m.used.add(key)
    for old in _CONTEXT_PROJECTORS:
        if not any(k.startswith(old) for k in m.state):
            raise ConversionError(f"{m.src} lacks the {old.rstrip('.')} weights of LLaMA-VID's context attention.")
    if any(k.startswith("model.vlm_att_bert_proj.") for k in m.state):
        raise ConversionError("The checkpoint has vlm_att_bert_proj weights, a variant this converter does not support.")


def map_qformer(m: _Mapping, qformer, legacy_pickle: bool) -> tuple[dict[str, torch.Tensor], str]:
    """The Q-Former, its queries and ln_vision: the checkpoint's own weights first (what the original loads), the
    InstructBLIP file as fallback.

    Returns the state the Q-Former came from and its key prefix (the configuration is read from them).
    """
    state, new, report = m.state, m.new, m.report
    qformer_state = {k: v for k, v in state.items() if k.startswith("model.vlm_att_encoder.")}
    blip: dict[str, torch.Tensor] | None = None
    if qformer is not None:
        blip = _state_dict_of(_torch_load(Path(qformer), legacy_pickle), Path(qformer), nested_key="model")
        for needed in ("query_tokens", "ln_vision.weight", "Qformer.bert.embeddings.word_embeddings.weight"):
            if needed not in blip:
                raise ConversionError(f"--qformer {qformer} has no {needed}; is it instruct_blip_*_trimmed.pth?")
    if not qformer_state:
        return _map_blip_qformer(m, blip, qformer)
    prefix = "model.vlm_att_encoder.bert."
    other = [k for k in qformer_state if not k.startswith(prefix)]
    if other:
        raise ConversionError(f"Unexpected Q-Former keys in the checkpoint, e.g. {other[0]}.")
    mapped, buffers = map_qformer_bert(state, prefix)
    new.update(mapped)
    m.used.update(qformer_state)
    m.ignored_src.update(buffers)
    report.ignore("Q-Former position_ids buffer, rebuilt by the model", buffers)
    for old, target in (("model.vlm_att_query", "model.token_generator.query_tokens"),):
        if old not in state:
            raise ConversionError(f"{m.src} has Q-Former weights but no {old}.")
        new[target] = state[old]
        m.used.add(old)
    ln = {k: v for k, v in state.items() if k.startswith("model.vlm_att_ln.")}
    if not ln:
        raise ConversionError(f"{m.src} has Q-Former weights but no model.vlm_att_ln (InstructBLIP ln_vision).")
    for key, value in ln.items():
        new["model.token_generator.qformer_layernorm." + key[len("model.vlm_att_ln.") :]] = value
    m.used.update(ln)
    if blip is not None:
        report.ignore(
            f"{Path(qformer).name}: not used, the checkpoint's own Q-Former weights take precedence as in the original",
            blip.keys(),
        )
    return state, prefix


def _map_blip_qformer(m: _Mapping, blip: dict[str, torch.Tensor] | None, qformer) -> tuple[dict[str, torch.Tensor], str]:
    """The Q-Former from `instruct_blip_vicuna7b_trimmed.pth`, for checkpoints that carry none."""
    if blip is None:
        raise ConversionError(
            f"{m.src} has no Q-Former weights (model.vlm_att_encoder.*); pass --qformer "
            "instruct_blip_vicuna7b_trimmed.pth."
        )
    blip_name = Path(qformer).name
    mapped, buffers = map_qformer_bert(blip, "Qformer.bert.")
    m.new.update(mapped)
    m.new["model.token_generator.query_tokens"] = blip["query_tokens"]
    for key in ("weight", "bias"):
        m.new[f"model.token_generator.qformer_layernorm.{key}"] = blip[f"ln_vision.{key}"]
    m.report.mapped[blip_name] = len(mapped) + 3
    m.report.ignore("Q-Former position_ids buffer, rebuilt by the model", buffers)
    m.report.ignore(
        f"parts of {blip_name} LLaMA-VID does not use (InstructBLIP's language-model side)",
        [k for k in blip if not k.startswith("Qformer.bert.") and k not in ("query_tokens", "ln_vision.weight", "ln_vision.bias")],
    )
    return blip, "Qformer.bert."


def map_vision_tower(m: _Mapping, vision_tower, num_layers: int, image_size: int, legacy_pickle: bool) -> None:
    """The EVA tower from `eva_vit_g.pth` (what the original builds it from), else from the checkpoint's own copy."""
    prefix = "model.vision_tower.vision_tower."
    tower_in_ckpt = {k[len(prefix) :]: v for k, v in m.state.items() if k.startswith(prefix)}
    m.used.update(prefix + k for k in tower_in_ckpt)
    if vision_tower is not None:
        eva_path = Path(vision_tower)
        eva = _state_dict_of(_torch_load(eva_path, legacy_pickle), eva_path)
        mapped, _ = map_eva(eva, num_layers, image_size, m.report, eva_path.name)
        m.new.update(mapped)
        m.report.mapped[eva_path.name] = len(mapped)
        if tower_in_ckpt:
            differs = [
                k
                for k, v in tower_in_ckpt.items()
                if k in eva and (v.shape != eva[k].shape or not torch.equal(v.to(eva[k].dtype), eva[k]))
            ]
            copy_keys = [prefix + k for k in tower_in_ckpt]
            m.report.ignore(
                f"copy of the EVA tower inside the checkpoint; the original rebuilds the tower from {eva_path.name}",
                copy_keys,
            )
            m.ignored_src.update(copy_keys)
            if differs:
                m.report.notes.append(
                    f"{len(differs)} EVA tensors of the checkpoint differ from {eva_path.name} (e.g. {differs[0]}); "
                    f"{eva_path.name} was used, as the original does."
                )
    elif tower_in_ckpt:
        mapped, not_needed = map_eva(tower_in_ckpt, num_layers, image_size, m.report, m.src_name, prefix)
        m.new.update(mapped)
        m.ignored_src.update(not_needed)
        m.report.notes.append("No --vision-tower given: the EVA tower was taken from the checkpoint's own copy.")
    else:
        raise ConversionError(f"{m.src} carries no EVA tower; pass --vision-tower eva_vit_g.pth.")
    for key in ("embeddings.class_embedding", "embeddings.position_embedding", "embeddings.patch_embedding.weight"):
        if "model.vision_model." + key not in m.new:
            raise ConversionError(f"The EVA weights lack {key} (cls_token / pos_embed / patch_embed).")
    for layer in range(num_layers):
        if f"model.vision_model.layers.{layer}.attn.qkv.weight" not in m.new:
            raise ConversionError(f"The EVA weights have fewer than {num_layers} blocks (block {layer} missing).")


def _account_for_every_key(m: _Mapping) -> None:
    unknown = sorted(set(m.state) - m.used)
    if unknown:
        raise ConversionError(f"{len(unknown)} checkpoint tensors are not understood, e.g. {unknown[0]}.")
    m.report.mapped[m.src_name] = len(m.used - m.ignored_src)


def _load_tokenizers(m: _Mapping, bert: Path, qformer_source: tuple[dict[str, torch.Tensor], str]):
    """The Llama and Q-Former tokenizers, checked against the embeddings they feed; BERT's config.json if any."""
    tokenizer = _load_llama_tokenizer(m.src, m.report)
    qformer_tokenizer = _load_bert_tokenizer(bert)
    qformer_state, qformer_prefix = qformer_source
    qformer_vocab = qformer_state[qformer_prefix + "embeddings.word_embeddings.weight"].shape[0]
    if len(qformer_tokenizer) != qformer_vocab:
        raise ConversionError(
            f"The BERT tokenizer in {bert} has {len(qformer_tokenizer)} entries with [DEC] but the Q-Former embeds "
            f"{qformer_vocab}; use bert-base-uncased."
        )
    bert_config = json.loads((bert / "config.json").read_text()) if (bert / "config.json").is_file() else {}
    vocab_size = m.state["model.embed_tokens.weight"].shape[0]
    if len(tokenizer) != vocab_size:
        raise ConversionError(
            f"The Llama tokenizer has {len(tokenizer)} entries but the model embeds {vocab_size}; the tokenizer files "
            "do not belong to this checkpoint."
        )
    return tokenizer, qformer_tokenizer, bert_config


def _build_config(m: _Mapping, original: dict[str, Any], projector_type: str, image_size: int, num_layers: int,
                  qformer_source: tuple[dict[str, torch.Tensor], str], bert_config: dict[str, Any],
                  inv_freq_dtype: torch.dtype, target_dtype: torch.dtype):
    """The `LlamaVidConfig` the mapped weights and the original configuration describe."""
    from .configuration_llamavid import LlamaVidConfig

    new = m.new
    vocab_size = m.state["model.embed_tokens.weight"].shape[0]
    eva_width = new["model.vision_model.embeddings.position_embedding"].shape[-1]
    vision = {
        "image_size": image_size,
        "patch_size": new["model.vision_model.embeddings.patch_embedding.weight"].shape[-1],
        "hidden_size": eva_width,
        "num_hidden_layers": num_layers,
        "num_attention_heads": max(1, eva_width // 88),  # the original: out_channel // 88
        "intermediate_size": new["model.vision_model.layers.0.mlp.fc1.weight"].shape[0],
        "layer_norm_eps": 1e-6,
        "qkv_bias": "model.vision_model.layers.0.attn.q_bias" in new,
    }
    query = new["model.token_generator.query_tokens"]
    config = LlamaVidConfig(
        vision_config=vision,
        qformer_config=_qformer_config(*qformer_source, bert_config),
        text_config=_text_config(original, vocab_size),
        num_query_tokens=query.shape[1],
        projector_type=projector_type,
        compress_type=original.get("compress_type"),
        select_feature=original.get("mm_vision_select_feature", "patch"),
        image_token_index=vocab_size,
        video_token_index=vocab_size + 1,
        original_rope_inv_freq_dtype=str(inv_freq_dtype).replace("torch.", ""),
    )
    config.dtype = target_dtype
    if original.get("num_query") is not None and int(original["num_query"]) != query.shape[1]:
        raise ConversionError(f"config.json says num_query {original['num_query']} but vlm_att_query has {query.shape[1]}.")
    return config


def _check_against_the_model(config, new: dict[str, torch.Tensor]) -> None:
    """Every parameter of the model present with its shape, nothing else (the model built on the meta device)."""
    from .modeling_llamavid import LlamaVidForConditionalGeneration

    with torch.device("meta"):
        skeleton = LlamaVidForConditionalGeneration(config)
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    missing = sorted(set(expected) - set(new))
    if missing:
        raise ConversionError(f"The inputs lack {len(missing)} weights of the model, e.g. {missing[0]}.")
    extra = sorted(set(new) - set(expected))
    if extra:
        raise ConversionError(f"Internal mapping produced unknown weights, e.g. {extra[0]}.")
    for key, shape in expected.items():
        if tuple(new[key].shape) != shape:
            raise ConversionError(f"{key} has shape {tuple(new[key].shape)} but the configuration needs {shape}.")


def _write_generation_config(config, src: Path, out: Path, report: ConversionReport) -> None:
    """The original's `generation_config.json`, its sampling settings included (defaults when it has none).

    Vicuna's file sets temperature and top_p without `do_sample`: decoding stays greedy unless a caller samples, and a
    caller who samples without giving top_p gets the release's (as the original evaluation did). transformers 5 will
    not `save_pretrained` such a file, so it is written as JSON; loading it, generating and saving the model work.
    """
    from transformers import GenerationConfig

    generation = GenerationConfig(
        bos_token_id=config.text_config.bos_token_id,
        eos_token_id=config.text_config.eos_token_id,
        pad_token_id=config.text_config.pad_token_id,
    )
    if (src / "generation_config.json").is_file():
        try:
            generation = GenerationConfig.from_pretrained(str(src))
        except Exception as error:  # noqa: BLE001
            report.notes.append(f"generation_config.json of {src} was not readable ({error}); defaults written.")
    kept = {flag: getattr(generation, flag) for flag in _SAMPLING_FLAGS if getattr(generation, flag, None) is not None}
    if kept and not generation.do_sample:
        listed = ", ".join(f"{k}={v}" for k, v in kept.items())
        report.notes.append(f"generation_config.json keeps the release's {listed}: greedy unless a caller samples, "
                            "then these apply where the caller gives none (as in the original evaluation).")
    generation.to_json_file(str(out / "generation_config.json"), use_diff=True)


def _write_processor(config, out: Path, image_size: int, compress_type, tokenizer, qformer_tokenizer) -> None:
    """The processor (image processor, both tokenizers with the placeholders, chat template) into `out`."""
    from .image_processing_llamavid import LlamaVidImageProcessor
    from .processing_llamavid import LlamaVidProcessor

    image_processor = LlamaVidImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
    )
    processor = LlamaVidProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        qformer_tokenizer=qformer_tokenizer,
        num_patches=(image_size // config.vision_config.patch_size) ** 2,
        compress_type=compress_type,
        select_feature=config.select_feature,
        qformer_max_length=config.qformer_max_length,
        qformer_truncation_side=config.qformer_truncation_side,
    )
    if (processor.image_token_id, processor.video_token_id) != (config.image_token_index, config.video_token_index):
        raise ConversionError(
            f"The tokenizer gave placeholder ids {processor.image_token_id}/{processor.video_token_id} instead of "
            f"{config.image_token_index}/{config.video_token_index}; it already defines <image> or <video>."
        )
    processor.save_pretrained(out)


def convert_llamavid_checkpoint(
    src: str | Path,
    out: str | Path,
    vision_tower: str | Path | None = None,
    qformer: str | Path | None = None,
    bert: str | Path | None = None,
    *,
    image_size: int | None = None,
    image_processor: str | Path | None = None,
    vision_num_layers: int = 39,
    dtype: str | None = None,
    max_shard_size: str = "5GB",
    overwrite: bool = False,
    legacy_pickle: bool = False,
) -> ConversionReport:
    """Convert an original LLaMA-VID / MovieLLM checkpoint folder into `out` (see the module docstring).

    Args:
        src: original checkpoint folder.
        out: destination folder (must be empty or absent unless `overwrite`).
        vision_tower: `eva_vit_g.pth`. Optional only if the checkpoint carries the tower itself.
        qformer: `instruct_blip_vicuna7b_trimmed.pth`. Optional if the checkpoint carries the Q-Former (releases do).
        bert: `bert-base-uncased`: a folder or a Hub id (tokenizer and configuration of the Q-Former).
        image_size: 224 or 336; default: `size.shortest_edge` of the preprocessor_config.json of the image processor
            folder (`image_processor`, else the original config's `image_processor` path), as the original reads it.
        image_processor: the CLIP image processor folder the original used (default: found from the config).
        vision_num_layers: EVA blocks to build (39, the BLIP-2 convention).
        dtype: cast every tensor to this dtype ("bfloat16", "float16", "float32"); default: each part keeps the
            precision of its source (the Llama weights theirs, the EVA tower that of eva_vit_g.pth, ...), and
            `config.dtype` is the Llama weights' dtype.
        max_shard_size: safetensors shard size.
        overwrite: allow writing into a non-empty `out`.
        legacy_pickle: read `.bin`/`.pth` files with full pickle (runs code from the file) when they hold Python
            objects besides tensors. Off by default; only for files you trust.

    Returns:
        A [`ConversionReport`] listing what was mapped and what was ignored and why.
    """
    src, out = Path(src), Path(out)
    original = _read_original_config(src, out, bert, overwrite)
    bert = _bert_folder(bert)
    projector_type = original.get("mm_projector_type", "linear")
    m = _Mapping(src=src, state=read_original_checkpoint(src, legacy_pickle), report=ConversionReport(output_dir=str(out)))

    # Every key of the checkpoint is mapped or reported as not needed, section by section.
    llm_dtype, inv_freq_dtype = map_language_model(m, projector_type)
    map_context_projectors(m)
    qformer_source = map_qformer(m, qformer, legacy_pickle)
    resolved_image_size = image_size or _image_size_from(original, src, image_processor, m.report)
    map_vision_tower(m, vision_tower, vision_num_layers, resolved_image_size, legacy_pickle)
    _account_for_every_key(m)

    tokenizer, qformer_tokenizer, bert_config = _load_tokenizers(m, bert, qformer_source)
    target_dtype = getattr(torch, dtype) if dtype else llm_dtype  # the dtype from_pretrained(dtype="auto") loads in
    config = _build_config(m, original, projector_type, resolved_image_size, vision_num_layers, qformer_source,
                           bert_config, inv_freq_dtype, target_dtype)
    _check_against_the_model(config, m.new)

    out.mkdir(parents=True, exist_ok=True)
    # Each part keeps its source precision unless a dtype is asked for: a float16 EVA tower cast to the LLM's
    # bfloat16 would move its features further than the original's own float16 rounding does.
    cast = getattr(torch, dtype) if dtype else None
    tensors = {k: (v.to(cast) if cast is not None and v.is_floating_point() else v).contiguous()
               for k, v in sorted(m.new.items())}
    kinds = sorted({str(v.dtype).replace("torch.", "") for v in tensors.values() if v.is_floating_point()})
    if len(kinds) > 1:
        m.report.notes.append(f"each part keeps its source precision ({', '.join(kinds)}); from_pretrained(dtype=...) "
                              "casts them to one dtype at load (float16 reproduces the original's inference).")
    _save_sharded(tensors, out, max_shard_size)
    config.architectures = ["LlamaVidForConditionalGeneration"]
    config.save_pretrained(out)
    _write_generation_config(config, src, out, m.report)
    _write_processor(config, out, resolved_image_size, original.get("compress_type"), tokenizer, qformer_tokenizer)
    if config.text_config.rope_parameters.get("rope_type") == "linear":
        m.report.notes.append(
            "Linear RoPE is exact by default; set config.original_rope_precision to reproduce the original's rounded "
            "angles beyond max_position_embeddings (llamavid-spec.md, section 9)."
        )
    return m.report


_SAMPLING_FLAGS = ("temperature", "top_p", "top_k", "typical_p", "min_p", "epsilon_cutoff", "eta_cutoff")


def _save_sharded(tensors: dict[str, torch.Tensor], out: Path, max_shard_size: str) -> None:
    from huggingface_hub import save_torch_state_dict

    save_torch_state_dict(
        tensors, str(out), max_shard_size=max_shard_size, metadata={"format": "pt"}, safe_serialization=True
    )


def run_from_args(args: argparse.Namespace) -> int:
    """Run a parsed `convert-llamavid` command: the report on stdout, or one `error: ...` line and exit code 2."""
    try:
        report = convert_llamavid_checkpoint(
            args.src,
            args.out,
            vision_tower=args.vision_tower,
            qformer=args.qformer,
            bert=args.bert,
            image_size=args.image_size,
            image_processor=args.image_processor,
            vision_num_layers=args.vision_layers,
            dtype=args.dtype,
            max_shard_size=args.max_shard_size,
            overwrite=args.overwrite,
            legacy_pickle=args.legacy_pickle,
        )
    except ConversionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(report.summary())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_from_args(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
