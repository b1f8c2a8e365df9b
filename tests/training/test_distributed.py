"""Two processes on the CPU (gloo) with the shipped FSDP and ZeRO-2 accelerate configs: one optimizer step gives the
loss and the weights of the same step in one process (the same two samples: batch 2 x 1 process = 1 x 2 processes)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from moviellm_model.tiny import build_tiny_checkpoint
from moviellm_model.training import load_recipe, run_training

ROOT = Path(__file__).resolve().parents[2]
STEP = {"max_steps": "1", "optim": "sgd", "learning_rate": "0.5", "logging_steps": "1", "save_steps": "100",
        "warmup_ratio": "0.0", "lr_scheduler_type": "constant", "sample_log": "true"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory, movies):
    root = tmp_path_factory.mktemp("distributed")
    # no dropout: the frozen Q-Former's dropout would draw other random numbers in each process layout
    checkpoint = build_tiny_checkpoint(root / "ckpt", seed=3, qformer_config={"hidden_dropout_prob": 0.0,
                                                                             "attention_probs_dropout_prob": 0.0})
    recipe = yaml.safe_load((ROOT / "configs" / "tiny-cpu.yaml").read_text())
    recipe.update(model=str(checkpoint), data=[{"type": "movies", "path": str(movies)}])
    recipe["training"]["dataloader_num_workers"] = 0
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    single = root / "single"
    run_training(load_recipe(path, {**STEP, "per_device_train_batch_size": "2"}), output_dir=single, progress=False)
    return root, path, single


def _cpu_config(name: str, root: Path, **changes) -> Path:
    """A shipped accelerate config, made to run 2 processes on the CPU."""
    config = yaml.safe_load((ROOT / "configs" / "accelerate" / name).read_text())
    config.update(num_processes=2, use_cpu=True, mixed_precision="no")
    for key, value in changes.items():
        section, _, field = key.partition(".")
        config[section][field] = value
    path = root / f"cpu-{name}"
    path.write_text(yaml.safe_dump(config))
    return path


def _launch(config: Path, recipe: Path, out: Path) -> None:
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config), "-m", "moviellm_data",
               "train", "--config", str(recipe), "--output-dir", str(out), "--no-progress",
               "--per-device-train-batch-size", "1"]
    for key, value in STEP.items():
        command += [f"--{key}", value]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


def _first_loss(out: Path) -> float:
    state = json.loads((out / "checkpoint-1" / "trainer_state.json").read_text())
    return next(entry["loss"] for entry in state["log_history"] if "loss" in entry)


def _compare(out: Path, single: Path) -> None:
    from transformers import AutoModelForImageTextToText

    def weights(folder: Path) -> dict:  # through from_pretrained: ZeRO-3's 16-bit save names keys its own way
        return AutoModelForImageTextToText.from_pretrained(folder).state_dict()

    ids = lambda folder, rank: json.loads((folder / f"samples-rank{rank}.jsonl").read_text().splitlines()[0])["ids"]
    assert sorted(ids(out, 0) + ids(out, 1)) == sorted(ids(single, 0))  # the same two samples, one per rank
    assert abs(_first_loss(out) - _first_loss(single)) < 1e-4
    ours, reference, base = weights(out), weights(single), weights(single.parent / "ckpt")
    moved = 0
    for key, value in reference.items():
        torch.testing.assert_close(ours[key], value, rtol=1e-4, atol=1e-6, msg=key)
        moved += int(not torch.equal(value, base[key]))
    assert moved > 0  # the step changed the trained weights


@pytest.mark.slow
def test_fsdp_two_processes_equal_one(setup):
    root, recipe, single = setup
    out = root / "fsdp"
    _launch(_cpu_config("fsdp.yaml", root), recipe, out)
    _compare(out, single)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="deepspeed is not installed (extra `deepspeed`)")
@pytest.mark.parametrize("config, changes", [
    # the optimizer stays with the parameters: on a CPU run there is no device memory to spare by offloading
    ("zero2-offload.yaml", {"deepspeed_config.offload_optimizer_device": "none"}),
    # ZeRO-3 shards every parameter, the frozen EVA tower and Q-Former included; the model's forward gathers them
    ("zero3.yaml", {}),
])
def test_deepspeed_two_processes_equal_one(setup, config, changes):
    root, recipe, single = setup
    out = root / config.split(".")[0]
    _launch(_cpu_config(config, root, **changes), recipe, out)
    _compare(out, single)
