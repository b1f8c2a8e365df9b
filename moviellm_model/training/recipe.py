"""Training recipes: a YAML file (`configs/*.yaml`) plus command-line overrides, validated before anything runs.

A recipe has the moviellm keys below and a `training:` section of `transformers.TrainingArguments` fields passed
through as they are (their names, their meaning). On the command line, `--KEY VALUE` overrides either kind
(`--max-length 4096`, `--learning-rate 1e-5`, `--training.save_steps 50`); an unknown key is one sentence.

Moviellm keys:

- `model`: a converted LLaMA-VID checkpoint (folder or Hub id), or `tiny` for a tiny random model built offline.
- `data`: a list of sources, each `{type: movies | llava_json, weight: 1.0, ...}` with the fields of
  `MovieSource` / `LlavaJsonSource` (`moviellm_model.training.records`). With `model: tiny` and no data, tiny
  offline movies are made in the output folder.
- `max_length`: the longest sample in tokens (visual tokens included); RoPE is scaled linearly when it exceeds the
  model's `max_position_embeddings` (factor `ceil(max_length / max_position_embeddings)`, as the original).
- `freeze`: `stage3` (the language model and the content projector learn; EVA, Q-Former and the context
  projections are frozen: the public stage-3 script), `stage3-release` (also the three context projections: the
  released long-video model's config), `lora` (LoRA adapters on the language model plus the content projector).
- `qformer_query`: what conditions a movie's context tokens: `question` (the bare question) or `moviellm` (the
  MovieLLM answer script's fixed pair); recorded in the saved config so that inference uses the same.
- `min_frames`, `window`: the over-length policy's frame floor; records ordered together by the stream.
- `lora`: `{r, alpha, dropout, target_modules, quantization: null | 4bit | 8bit}` (peft; 4/8-bit needs CUDA).
- `attn_implementation`: `sdpa` (default), `flash_attention_2` (where installed) or `eager`.
- `loss_chunk_size`: rows of logits per chunk of the labelled-positions loss (`null`: the standard full-logits loss).
- `checkpointing`: `full` (recompute every decoder layer) or `attention` (keep the attention kernels' outputs and
  recompute the rest: faster, more memory); used when `training.gradient_checkpointing` is on.
- `visual_chunk_size`: movie frames per call of the frozen Q-Former and context attention (512: 4.8x faster than the
  original's 64 for 8K frames on an H200, a few GiB more).
- `sdpa_backends`: SDPA kernel priority on CUDA, e.g. `[cudnn, flash, efficient, math]`.
- `sample_log`: write `samples-rank<r>.jsonl` in the output folder: the ids of the conversations each step trained on
  (an audit of the data order; a resumed run continues it from the checkpoint's step).
- `dtype`: weights' dtype when loading (`bfloat16`, `float32`, ...; default float32 with fp32 training, bfloat16
  with `training.bf16`).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .records import DataError

__all__ = ["RecipeError", "TrainRecipe", "load_recipe"]

FREEZE_PRESETS = ("stage3", "stage3-release", "lora")
CHECKPOINTING = ("full", "attention")
SOURCE_TYPES = ("movies", "llava_json")


class RecipeError(ValueError):
    """A recipe or an override is wrong (one sentence for the user)."""


@dataclass
class TrainRecipe:
    """A validated training recipe (see the module docstring for each key)."""

    model: str
    output_dir: str | None = None
    data: list[dict] = field(default_factory=list)
    max_length: int = 65536
    freeze: str = "stage3"
    qformer_query: str = "question"
    min_frames: int = 16
    window: int = 64
    lora: dict = field(default_factory=dict)
    attn_implementation: str = "sdpa"
    loss_chunk_size: int | None = 4096
    checkpointing: str = "full"
    visual_chunk_size: int = 512
    sdpa_backends: list[str] | None = None
    dtype: str | None = None
    tiny_movies: int = 8
    sample_log: bool = False
    training: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.freeze not in FREEZE_PRESETS:
            raise RecipeError(f"freeze must be one of {', '.join(FREEZE_PRESETS)}, not {self.freeze!r}.")
        if self.checkpointing not in CHECKPOINTING:
            raise RecipeError(f"checkpointing must be one of {', '.join(CHECKPOINTING)}, not {self.checkpointing!r}.")
        from ..input_format import QFORMER_QUERIES

        if self.qformer_query not in QFORMER_QUERIES:
            raise RecipeError(f"qformer_query must be one of {', '.join(QFORMER_QUERIES)}, not {self.qformer_query!r}.")
        for name in ("max_length", "min_frames", "window", "tiny_movies", "visual_chunk_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise RecipeError(f"{name} must be a positive whole number, not {value!r}.")
        if self.loss_chunk_size is not None and (not isinstance(self.loss_chunk_size, int) or self.loss_chunk_size < 1):
            raise RecipeError(f"loss_chunk_size must be a positive whole number or null, not {self.loss_chunk_size!r}.")
        if not isinstance(self.data, list) or not all(isinstance(item, dict) for item in self.data):
            raise RecipeError("data must be a list of sources, each a mapping with a `type` (movies or llava_json).")
        for item in self.data:
            if item.get("type") not in SOURCE_TYPES:
                raise RecipeError(f"data source type must be one of {', '.join(SOURCE_TYPES)}, not {item.get('type')!r}.")
        if not self.data and self.model != "tiny":
            raise RecipeError("the recipe has no data: add sources under `data:` (movies or llava_json).")
        if self.freeze == "lora" and not isinstance(self.lora, dict):
            raise RecipeError("lora must be a mapping of LoRA settings (r, alpha, dropout, target_modules).")
        self.training = dict(self.training or {})
        unknown = sorted(set(self.training) - set(_training_fields()))
        if unknown:
            raise RecipeError(f"training has unknown key(s) {', '.join(unknown)}; they must be "
                              "transformers.TrainingArguments fields.")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def build_sources(self) -> list:
        """The recipe's data sources as `WeightedSource`s (paths relative to the working directory)."""
        from .records import LlavaJsonSource, MovieSource
        from .stream import WeightedSource

        sources = []
        for index, item in enumerate(self.data):
            spec = dict(item)
            kind = spec.pop("type")
            weight = spec.pop("weight", 1.0)
            spec.setdefault("name", f"{kind}[{index}]")
            cls = MovieSource if kind == "movies" else LlavaJsonSource
            allowed = {f.name for f in dataclasses.fields(cls) if f.init}
            unknown = sorted(set(spec) - allowed)
            if unknown:
                raise RecipeError(f"data source {spec['name']} has unknown key(s) {', '.join(unknown)}; a {kind} "
                                  f"source takes {', '.join(sorted(allowed))}.")
            try:
                sources.append(WeightedSource(cls(**spec), weight=float(weight)))
            except (DataError, TypeError, ValueError) as err:
                raise RecipeError(str(err)) from None
        return sources


def _training_fields() -> dict[str, dataclasses.Field]:
    from transformers import TrainingArguments

    fields = {f.name: f for f in dataclasses.fields(TrainingArguments) if f.init}
    if "warmup_ratio" not in fields:  # newer transformers take a ratio as a float `warmup_steps` < 1
        fields["warmup_ratio"] = dataclasses.field(default=0.0)
        fields["warmup_ratio"].name, fields["warmup_ratio"].type = "warmup_ratio", float
    return fields


def training_arguments_kwargs(training: dict) -> dict:
    """The `training:` section as TrainingArguments keywords for the installed transformers."""
    from transformers import TrainingArguments

    settings = dict(training)
    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    if "warmup_ratio" in settings and "warmup_ratio" not in names:
        ratio = float(settings.pop("warmup_ratio"))
        if ratio and not settings.get("warmup_steps"):
            settings["warmup_steps"] = ratio
    return settings


def _recipe_fields() -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(TrainRecipe) if f.init}


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """A command-line string as the type a field declares (int, float, bool, list; YAML syntax otherwise)."""
    if not isinstance(value, str):
        return value
    if isinstance(annotation, str):  # postponed annotations of this module
        annotation = {"int": int, "float": float, "bool": bool, "str": str}.get(annotation.split(" |")[0], None)
    kinds = set()
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        kinds = {a for a in typing.get_args(annotation) if a is not type(None)}
    elif annotation is not None:
        kinds = {annotation}
    lowered = value.strip().lower()
    if lowered in ("none", "null", "~"):
        return None
    try:
        if bool in kinds:
            if lowered in ("true", "yes", "1", "on"):
                return True
            if lowered in ("false", "no", "0", "off"):
                return False
            raise ValueError
        if int in kinds and float not in kinds:
            return int(value)
        if float in kinds:
            return float(value)
    except ValueError:
        raise RecipeError(f"--{key} {value} is not a valid {' or '.join(sorted(k.__name__ for k in kinds))}.") from None
    if str in kinds:
        return value
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError:
        return value


def apply_overrides(document: dict, overrides: dict[str, str]) -> dict:
    """Set `--KEY VALUE` overrides on a recipe document: moviellm keys, `training.KEY`, or TrainingArguments fields."""
    document = dict(document)
    document["training"] = dict(document.get("training") or {})
    recipe_fields, training_fields = _recipe_fields(), _training_fields()
    for raw_key, value in overrides.items():
        key = raw_key.lstrip("-").replace("-", "_")
        if key.startswith("training."):
            key = key[len("training."):]
            if key not in training_fields:
                raise RecipeError(f"--{raw_key.lstrip('-')} is not a transformers.TrainingArguments field.")
            document["training"][key] = _coerce(value, training_fields[key].type, raw_key.lstrip("-"))
        elif key in recipe_fields and key not in ("training", "data"):
            document[key] = _coerce(value, recipe_fields[key].type, raw_key.lstrip("-"))
        elif key in training_fields:
            document["training"][key] = _coerce(value, training_fields[key].type, raw_key.lstrip("-"))
        else:
            raise RecipeError(f"--{raw_key.lstrip('-')} is neither a recipe key nor a TrainingArguments field "
                              "(see `moviellm train --help`).")
    return document


def load_recipe(path: str | Path, overrides: dict[str, str] | None = None) -> TrainRecipe:
    """Read a recipe file, apply overrides, validate; every mistake is a `RecipeError` sentence."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe {path} does not exist; see configs/ for the shipped recipes.")
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise RecipeError(f"recipe {path} is not valid YAML ({str(err).splitlines()[0]}).") from None
    if not isinstance(document, dict):
        raise RecipeError(f"recipe {path} must be a mapping of keys (model, data, training, ...).")
    document = apply_overrides(document, overrides or {})
    unknown = sorted(set(document) - set(_recipe_fields()))
    if unknown:
        raise RecipeError(f"recipe {path} has unknown key(s) {', '.join(unknown)}; known: "
                          f"{', '.join(sorted(_recipe_fields()))}.")
    if "model" not in document:
        raise RecipeError(f"recipe {path} has no `model` (a converted LLaMA-VID checkpoint, or tiny).")
    try:
        return TrainRecipe(**document)
    except TypeError as err:
        raise RecipeError(f"recipe {path}: {err}.") from None
