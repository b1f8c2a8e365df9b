"""Stage-3 long-video tuning of LLaMA-VID on the transformers Trainer.

`run_training(recipe)` loads the model (linear RoPE scaling for the recipe's `max_length`, the freezing preset,
optional LoRA/QLoRA), streams the data (`moviellm_model.training.stream`), trains with `LlamaVidTrainer` (a Trainer
whose data loader is the resumable stream, which counts tokens per second, model FLOPs utilisation and what the data
policy adjusted or skipped), resumes from the newest `checkpoint-*` of the output folder at the same step and the
same place in the data, and saves a `save_pretrained` model with its processor and a model card.

Multi-GPU: start the same command under `accelerate launch --config_file configs/accelerate/<fsdp|zero2|zero3>.yaml`
or `torchrun`; every rank reads the same ordered stream and encodes only its own batches.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from transformers import AutoConfig, AutoProcessor, Trainer, TrainerCallback, TrainingArguments

from ..modeling_llamavid import LlamaVidForConditionalGeneration
from .encoding import ConversationEncoder
from .recipe import RecipeError, TrainRecipe, training_arguments_kwargs
from .stream import IDS_KEY, STATS_KEY, DataStats, MixedStream, TrainingBatches, make_dataloader

logger = logging.getLogger(__name__)

__all__ = [
    "FREEZE_TRAINED_PREFIXES",
    "LlamaVidTrainer",
    "TrainResult",
    "apply_freeze",
    "newest_checkpoint",
    "rope_scaling_for",
    "run_training",
]

#: Parameters that learn under each freezing preset (llamavid-spec.md 4.3); everything else is frozen.
FREEZE_TRAINED_PREFIXES = {
    # the public stage-3 script (`qformer_pretrain_freeze_all`): LLM + content projector
    "stage3": ("model.language_model.", "lm_head.", "model.token_generator.content_projector."),
    # the released long-video config (`qformer_pretrain_freeze`): also the three context projections
    "stage3-release": (
        "model.language_model.", "lm_head.", "model.token_generator.content_projector.",
        "model.token_generator.context_query_projector.", "model.token_generator.context_key_projector.",
        "model.token_generator.context_projector.",
    ),
    # LoRA: adapters on the language model are added by peft; the content projector learns fully
    "lora": ("model.token_generator.content_projector.",),
}
LORA_TARGETS = r".*language_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
DATA_STATS_FILE = "data_stats.json"
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
#: Dense bf16 peak of the cards MFU is reported against (TFLOP/s), matched on the device name.
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0}


@dataclass
class TrainResult:
    output_dir: Path
    global_step: int
    final_loss: float | None
    data: DataStats = field(default_factory=DataStats)
    resumed_from: Path | None = None


# ------------------------------------------------------------------------------------------------- the model


def rope_scaling_for(max_length: int, text_config) -> dict | None:
    """The linear RoPE scaling stage 3 applies: factor ceil(max_length / context), only when the context is exceeded.

    `context` is `max_position_embeddings` times any linear factor already there (the original's rule,
    llamavid-spec.md 1.10). Returns the new `rope_parameters`, or None when nothing changes.
    """
    rope = dict(getattr(text_config, "rope_parameters", None) or {})
    current = float(rope.get("factor", 1.0)) if rope.get("rope_type") == "linear" else 1.0
    context = text_config.max_position_embeddings
    if max_length <= context * current:
        return None
    if rope.get("rope_type") not in (None, "default", "linear"):
        raise RecipeError(f"the model uses {rope.get('rope_type')} RoPE scaling; stage 3 extends only default or "
                          "linear RoPE.")
    return {"rope_type": "linear", "factor": float(math.ceil(max_length / context)),
            "rope_theta": float(rope.get("rope_theta", 10000.0))}


def apply_freeze(model: torch.nn.Module, preset: str) -> tuple[int, int]:
    """Freeze everything but the preset's trained parameters; returns (trained, total) parameter counts."""
    prefixes = FREEZE_TRAINED_PREFIXES[preset]
    trained = total = 0
    for name, param in model.named_parameters():
        learn = name.startswith(prefixes)
        param.requires_grad_(learn)
        total += param.numel()
        trained += param.numel() if learn else 0
    return trained, total


def _resolve_dtype(recipe: TrainRecipe) -> torch.dtype:
    if recipe.dtype:
        try:
            return getattr(torch, recipe.dtype)
        except AttributeError:
            raise RecipeError(f"dtype {recipe.dtype!r} is not a torch dtype (bfloat16, float16, float32).") from None
    return torch.bfloat16 if recipe.training.get("bf16") else torch.float32


def load_model(recipe: TrainRecipe, model_path: str):
    """The model and processor set up for training: RoPE scaled, loss and query policy recorded, preset frozen."""
    try:
        config = AutoConfig.from_pretrained(model_path)
        processor = AutoProcessor.from_pretrained(model_path)
    except (OSError, ValueError) as err:
        raise RecipeError(f"model {model_path} is not a LLaMA-VID checkpoint ({_first_line(err)}); convert one with "
                          "`moviellm convert-llamavid` or use model: tiny.") from None
    rope = rope_scaling_for(recipe.max_length, config.text_config)
    if rope is not None:
        config.text_config.rope_parameters = rope
        logger.info("linear RoPE scaling, factor %s, for %d tokens", rope["factor"], recipe.max_length)
    config.loss_chunk_size = recipe.loss_chunk_size
    config.visual_chunk_size = recipe.visual_chunk_size
    config.qformer_query = recipe.qformer_query  # inference conditions the context tokens the same way
    config.text_config.use_cache = False
    if recipe.sdpa_backends is not None:
        config.sdpa_backends = list(recipe.sdpa_backends)
    kwargs = {"config": config, "dtype": _resolve_dtype(recipe), "attn_implementation": recipe.attn_implementation}
    quantization = (recipe.lora or {}).get("quantization")
    if recipe.freeze == "lora" and quantization:
        kwargs["quantization_config"] = _quantization_config(quantization)
    model = LlamaVidForConditionalGeneration.from_pretrained(model_path, **kwargs)
    trained, total = apply_freeze(model, recipe.freeze)
    if recipe.freeze == "lora":
        model = _add_lora(model, recipe.lora or {}, quantized=bool(quantization))
    else:
        logger.info("freeze preset %s: %s of %s parameters learn", recipe.freeze, f"{trained:,}", f"{total:,}")
    return model, processor


def _quantization_config(quantization: str):
    if quantization not in ("4bit", "8bit"):
        raise RecipeError(f"lora.quantization must be 4bit, 8bit or null, not {quantization!r}.")
    if not torch.cuda.is_available():
        raise RecipeError("QLoRA (lora.quantization) needs a CUDA GPU and bitsandbytes.")
    from transformers import BitsAndBytesConfig

    skip = ["vision_model", "token_generator", "lm_head"]  # quantise the language model's layers only
    if quantization == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=torch.bfloat16, llm_int8_skip_modules=skip)
    return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)


def _add_lora(model, settings: dict, quantized: bool):
    try:
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    except ImportError:
        raise RecipeError("freeze: lora needs peft: pip install 'moviellm[train]'.") from None
    unknown = sorted(set(settings) - {"r", "alpha", "dropout", "target_modules", "quantization"})
    if unknown:
        raise RecipeError(f"lora has unknown key(s) {', '.join(unknown)}; use r, alpha, dropout, target_modules, "
                          "quantization.")
    if quantized:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    lora = LoraConfig(r=int(settings.get("r", 64)), lora_alpha=int(settings.get("alpha", 128)),
                      lora_dropout=float(settings.get("dropout", 0.05)),
                      target_modules=settings.get("target_modules", LORA_TARGETS),
                      modules_to_save=["content_projector"], task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    apply_freeze_lora_extras(model)
    return model


def apply_freeze_lora_extras(model) -> None:
    """Under LoRA, only adapters and the content projector's trainable copy learn."""
    for name, param in model.named_parameters():
        param.requires_grad_("lora_" in name or ("content_projector" in name and "modules_to_save" in name))


# ------------------------------------------------------------------------------------------------ the trainer


def sequence_flops(config, lengths: list[int]) -> float:
    """Model FLOPs of one training step over sequences of `lengths` tokens: 3x the forward, attention included.

    Forward: 2 FLOPs per multiply-add for every language-model weight (embeddings excluded, LM head included) per token,
    plus causal attention 2 x L^2 x width per layer (QK^T and AV, half the square). Recomputation is not counted.
    """
    text = config.text_config
    width, layers = text.hidden_size, text.num_hidden_layers
    heads, kv_heads = text.num_attention_heads, text.num_key_value_heads
    head_dim = getattr(text, "head_dim", None) or width // heads
    per_layer = width * head_dim * (2 * heads + 2 * kv_heads) + 3 * width * text.intermediate_size
    weights = layers * per_layer + width * text.vocab_size
    return float(sum(3 * (2 * weights * n + 2 * layers * width * n * n) for n in lengths))


def device_peak_flops() -> float | None:
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    for key, tflops in PEAK_TFLOPS.items():
        if key in name:
            return tflops * 1e12
    return None


class LlamaVidTrainer(Trainer):
    """A Trainer whose training data is a `TrainingBatches` stream (resumable, sharded by rank, already collated).

    It also logs tokens per second and model FLOPs utilisation per device, and counts what the data policy adjusted or
    skipped (`data_stats`), saving the counters with every checkpoint.
    """

    def __init__(self, *args, batches: TrainingBatches, peak_flops: float | None = None,
                 sample_log: Path | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.batches = batches
        self.sample_log = sample_log
        self.data_stats = DataStats()
        self.peak_flops = peak_flops if peak_flops is not None else device_peak_flops()
        self._window_tokens = 0
        self._window_flops = 0.0
        self._window_start = time.perf_counter()

    def get_train_dataloader(self):
        return make_dataloader(self.batches, num_workers=self.args.dataloader_num_workers,
                               pin_memory=self.args.dataloader_pin_memory)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        stats = inputs.pop(STATS_KEY, None)
        if stats:
            self.data_stats.update(stats)
        ids = inputs.pop(IDS_KEY, None)
        if self.sample_log is not None and ids is not None and model.training:
            with open(self.sample_log, "a", encoding="utf-8") as handle:
                handle.write(json.dumps({"step": self.state.global_step + 1, "ids": ids}) + "\n")
        mask = inputs.get("attention_mask")
        ids = inputs["input_ids"]
        lengths = mask.sum(dim=1).tolist() if mask is not None else [ids.shape[1]] * ids.shape[0]
        self._window_tokens += int(sum(lengths))
        self._window_flops += sequence_flops(self.model.config, lengths)
        if isinstance(num_items_in_batch, torch.Tensor) and int(num_items_in_batch) == 0:
            num_items_in_batch = None  # every sample of the step was skipped: the loss is a zero, not 0/0
        return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)

    def log(self, logs: dict, start_time: float | None = None) -> None:
        if "loss" in logs:
            elapsed = time.perf_counter() - self._window_start
            if elapsed > 0 and self._window_tokens:
                logs["tokens_per_second"] = round(self._window_tokens / elapsed, 1)
                if self.peak_flops:
                    logs["mfu"] = round(self._window_flops / elapsed / self.peak_flops, 4)
            skipped = sum(v for k, v in self.data_stats.items() if k.startswith("skipped_"))
            logs["samples_skipped"] = skipped
            logs["samples_adjusted"] = self.data_stats.get("frames_subsampled", 0) + self.data_stats.get("turns_dropped", 0)
            self._window_tokens, self._window_flops = 0, 0.0
            self._window_start = time.perf_counter()
        super().log(logs, start_time)


class _DataStatsCheckpoint(TrainerCallback):
    """Writes the data counters into every checkpoint, so a resumed run reports the whole run's counts."""

    def __init__(self, trainer: LlamaVidTrainer):
        self.trainer = trainer

    def on_save(self, args, state, control, **kwargs):
        stats = _gather_stats(self.trainer.data_stats)  # a collective: every rank takes part
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if state.is_world_process_zero and folder.is_dir():
            (folder / DATA_STATS_FILE).write_text(json.dumps(stats))


def _gather_stats(stats: DataStats) -> dict:
    """The counters summed over ranks (every rank counts its own batches)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        gathered = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(gathered, dict(stats))
        total = DataStats()
        for item in gathered:
            total.update(item)
        return dict(total)
    return dict(stats)


# ---------------------------------------------------------------------------------------------------- running


def newest_checkpoint(output_dir: Path) -> Path | None:
    """The `checkpoint-N` folder with the largest N that holds a complete trainer state."""
    found = []
    for path in output_dir.glob("checkpoint-*"):
        match = CHECKPOINT_RE.match(path.name)
        if match and (path / "trainer_state.json").is_file():
            found.append((int(match.group(1)), path))
    return max(found)[1] if found else None


def _first_line(err: Exception) -> str:
    lines = str(err).strip().splitlines()
    return lines[0][:200] if lines else type(err).__name__


def _rank_and_world() -> tuple[int, int]:
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def _training_arguments(recipe: TrainRecipe, output_dir: Path) -> TrainingArguments:
    settings = {"report_to": "none", "logging_steps": 1, "save_strategy": "steps", "save_steps": 200,
                "seed": 42, "dataloader_num_workers": 1}
    settings.update(recipe.training)
    # The stream resumes at the right place itself (cheaply, without re-encoding): the Trainer must not skip batches.
    settings.update(output_dir=str(output_dir), ignore_data_skip=True, remove_unused_columns=False)
    if settings.get("gradient_checkpointing"):
        kwargs = dict(settings.get("gradient_checkpointing_kwargs") or {})
        kwargs.setdefault("use_reentrant", False)
        if recipe.checkpointing == "attention":
            from .checkpointing import keep_attention_context

            kwargs["context_fn"] = keep_attention_context
        settings["gradient_checkpointing_kwargs"] = kwargs
    try:
        return TrainingArguments(**training_arguments_kwargs(settings))
    except (TypeError, ValueError) as err:
        raise RecipeError(f"training settings are invalid: {_first_line(err)}") from None


def prepare_run(recipe: TrainRecipe, output_dir: Path) -> tuple[str, list]:
    """The model path and the data sources, making the tiny model and tiny movies when the recipe asks for them."""
    work = output_dir / ".moviellm"
    if recipe.model == "tiny" and not recipe.data:
        movies = work / "tiny-movies"
        if not (movies / "manifest.jsonl").is_file():
            _make_tiny_movies(movies, recipe.tiny_movies)
        recipe.data = [{"type": "movies", "path": str(movies), "name": "tiny-movies"}]
    sources = recipe.build_sources()  # checked before any model is read or built
    model_path = recipe.model
    if recipe.model == "tiny":
        from ..tiny import build_tiny_checkpoint

        model_path = str(work / "tiny-base")
        if not (Path(model_path) / "config.json").is_file():
            build_tiny_checkpoint(model_path, seed=int(recipe.training.get("seed", 42)))
    return model_path, sources


def _make_tiny_movies(out: Path, count: int) -> None:
    from moviellm_data.pipeline import GenerateOptions, generate
    from moviellm_data.renderers import StoryboardRenderer
    from moviellm_data.writers import ProceduralWriter

    logger.info("making %d tiny offline movies in %s", count, out)
    generate(GenerateOptions(out=out, movies=count, seed=0), ProceduralWriter("tiny"),
             StoryboardRenderer(width=64, height=64), progress=False)


def run_training(recipe: TrainRecipe, output_dir: str | Path | None = None, progress: bool = True) -> TrainResult:
    """Train as the recipe says; see the module docstring. Reruns continue from the newest checkpoint."""
    output_dir = Path(output_dir or recipe.output_dir or "")
    if not str(output_dir):
        raise RecipeError("no output folder: give --output-dir DIR or output_dir in the recipe.")
    if output_dir.exists() and not output_dir.is_dir():
        raise RecipeError(f"--output-dir {output_dir} is a file; choose a folder.")
    output_dir.mkdir(parents=True, exist_ok=True)
    recipe.output_dir = str(output_dir)
    args = _training_arguments(recipe, output_dir)  # also starts the process group under torchrun / accelerate
    if not progress:
        args.disable_tqdm = True
    with args.main_process_first(desc="preparing the model and the data"):  # the others read what it made
        model_path, sources = prepare_run(recipe, output_dir)
    model, processor = load_model(recipe, model_path)

    rank, world_size = _rank_and_world()
    encoder = ConversationEncoder(processor, recipe.max_length, qformer_query=recipe.qformer_query,
                                  min_frames=recipe.min_frames)
    pad = processor.tokenizer.pad_token_id if processor.tokenizer.pad_token_id is not None else 0
    stream = MixedStream(sources, seed=args.seed)
    batches = TrainingBatches(stream, encoder, batch_size=args.per_device_train_batch_size, window=recipe.window,
                              rank=rank, world_size=world_size, pad_token_id=pad, seed=args.seed)
    checkpoint = newest_checkpoint(output_dir)
    sample_log = output_dir / f"samples-rank{rank}.jsonl" if recipe.sample_log else None
    trainer = LlamaVidTrainer(model=model, args=args, processing_class=processor, batches=batches,
                              sample_log=sample_log)
    trainer.add_callback(_DataStatsCheckpoint(trainer))
    if checkpoint is not None:
        _resume_stream(trainer, batches, checkpoint)
    elif sample_log is not None and sample_log.exists():
        sample_log.unlink()  # a fresh run (no checkpoint to continue): a fresh log
    _write_recipe(output_dir, recipe)
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    result = _finish(trainer, recipe, output_dir, processor, checkpoint)
    _end_process_group()
    return result


def _end_process_group() -> None:
    """Leave the process group together: communication threads still alive at interpreter exit abort the process
    ("terminate called without an active exception", seen with ZeRO-3 over gloo)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def _resume_stream(trainer: LlamaVidTrainer, batches: TrainingBatches, checkpoint: Path) -> None:
    """Start the stream where the checkpoint's step left it, with the data counters of the run so far."""
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    step = int(state["global_step"])
    accumulation = trainer.args.gradient_accumulation_steps
    per_epoch = max(math.ceil(len(batches) / accumulation), 1)
    batches.resume_at(step // per_epoch, (step % per_epoch) * accumulation)
    if trainer.sample_log is not None and trainer.sample_log.exists():  # steps after the checkpoint are trained again
        kept = [line for line in trainer.sample_log.read_text(encoding="utf-8").splitlines()
                if line.strip() and _logged_step(line) is not None and _logged_step(line) <= step]
        trainer.sample_log.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    stats_file = checkpoint / DATA_STATS_FILE
    if stats_file.is_file() and trainer.args.process_index == 0:
        trainer.data_stats.update(json.loads(stats_file.read_text()))
    logger.info("resuming from %s: step %d, the stream continues at epoch %d batch %d", checkpoint.name, step,
                batches.start_epoch, batches.start_batch)


def _logged_step(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None  # a line cut by a kill


def _write_recipe(output_dir: Path, recipe: TrainRecipe) -> None:
    if int(os.environ.get("RANK", "0")) == 0:
        (output_dir / "moviellm_recipe.yaml").write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False))


def _finish(trainer: LlamaVidTrainer, recipe: TrainRecipe, output_dir: Path, processor, resumed) -> TrainResult:
    stats = DataStats(_gather_stats(trainer.data_stats))
    model = trainer.model
    if recipe.freeze == "lora":
        model = model.merge_and_unload()  # a plain checkpoint that from_pretrained loads without peft
        trainer.model = model
    trainer.save_model(str(output_dir))
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    final_loss = losses[-1] if losses else None
    if trainer.is_world_process_zero():
        processor.save_pretrained(output_dir)
        (output_dir / DATA_STATS_FILE).write_text(json.dumps(dict(stats)))
        _write_card(output_dir, recipe, trainer, final_loss, stats)
    logger.info("data: %s", stats.summary())
    return TrainResult(output_dir=output_dir, global_step=trainer.state.global_step, final_loss=final_loss, data=stats,
                       resumed_from=resumed)


def _write_card(output_dir: Path, recipe: TrainRecipe, trainer: LlamaVidTrainer, final_loss, stats) -> None:
    from moviellm_data.card import write_model_card

    sources = [f"{item.get('type')}: {item.get('path')} (weight {item.get('weight', 1.0)})" for item in recipe.data]
    hub_ids = [str(item["path"]) for item in recipe.data
               if isinstance(item.get("path"), str) and item["path"].count("/") == 1 and not Path(item["path"]).exists()]
    args = trainer.args
    training = "\n".join([
        f"Stage-3 long-video tuning with moviellm (`moviellm train`), freezing preset `{recipe.freeze}`, "
        f"maximum length {recipe.max_length:,} tokens, Q-Former query `{recipe.qformer_query}`.",
        "",
        "Data: " + "; ".join(sources) + ".",
        "",
        f"Steps {trainer.state.global_step}, learning rate {args.learning_rate}, {args.lr_scheduler_type} schedule, "
        f"warm-up {recipe.training.get('warmup_ratio', args.warmup_steps)}, batch {args.per_device_train_batch_size} per device x "
        f"{args.gradient_accumulation_steps} accumulation x {args.world_size} devices, "
        f"{'bf16' if args.bf16 else 'fp32'}. Final training loss: "
        f"{'%.4f' % final_loss if final_loss is not None else 'n/a'}.",
        "",
        f"Data policy: {stats.summary()}.",
    ])
    facts = [("base model", recipe.model), ("freezing preset", recipe.freeze), ("max length", recipe.max_length),
             ("final loss", None if final_loss is None else round(final_loss, 4))]
    write_model_card(output_dir, output_dir.name, base_model=recipe.model if recipe.model != "tiny" else None,
                     datasets=hub_ids, training=training, model_facts=facts)
