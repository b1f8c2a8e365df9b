"""`moviellm train` end to end on the CPU: the tiny recipe, resume after a kill, the saved folder, presets, parity."""

from __future__ import annotations

import copy
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from moviellm_data.cli import main
from moviellm_model.training import ConversationEncoder, MovieSource, collate, load_recipe, run_training
from moviellm_model.training.encoding import render_with_answer_spans
from moviellm_model.training.recipe import TrainRecipe
from moviellm_model.training.trainer import FREEZE_TRAINED_PREFIXES, apply_freeze, load_model, rope_scaling_for

from .conftest import original_labels

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "configs" / "tiny-cpu.yaml"
OVERRIDES = {"max_steps": "12", "save_steps": "6", "logging_steps": "3", "sample_log": "true"}


def _cli_args(out: Path) -> list[str]:
    args = ["train", "--config", str(RECIPE), "--output-dir", str(out), "--no-progress"]
    for key, value in OVERRIDES.items():
        args += [f"--{key}", value]
    return args


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny-run") / "run"
    result = run_training(load_recipe(RECIPE, OVERRIDES), output_dir=out, progress=False)
    return out, result


def _losses(out: Path) -> list[float]:
    state = json.loads((out / "checkpoint-12" / "trainer_state.json").read_text())
    return [entry["loss"] for entry in state["log_history"] if "loss" in entry]


def test_tiny_recipe_trains_and_its_loss_goes_down(tiny_run):
    out, result = tiny_run
    assert result.global_step == 12 and result.final_loss is not None
    losses = _losses(out)
    assert len(losses) == 4 and losses[-1] < losses[0], losses
    state = json.loads((out / "checkpoint-12" / "trainer_state.json").read_text())
    logged = [entry for entry in state["log_history"] if "loss" in entry]
    assert all(entry["tokens_per_second"] > 0 for entry in logged)  # throughput logged by the trainer
    stats = json.loads((out / "data_stats.json").read_text())
    assert stats["samples"] == 12 * 2 and stats == dict(result.data)
    log = [json.loads(line) for line in (out / "samples-rank0.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in log] == list(range(1, 13))


def test_saved_folder_reloads_generates_and_has_a_card(tiny_run):
    from huggingface_hub import ModelCard
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from moviellm_data.shards import read_movies

    out, result = tiny_run
    model = AutoModelForImageTextToText.from_pretrained(out).eval()
    processor = AutoProcessor.from_pretrained(out)
    assert model.config.qformer_query == "question"
    assert model.config.text_config.rope_parameters["rope_type"] == "linear"
    assert model.config.text_config.rope_parameters["factor"] == 16.0  # ceil(1024 / 64)
    script, frames = next(read_movies(out / ".moviellm" / "tiny-movies"))
    question = script.qa[0].question
    prompt = processor.build_movie_prompt(question, subtitles=[f.subtitle or "" for f in script.timeline])
    inputs = processor(text=prompt, long_videos=[frames], qformer_text=[question], return_tensors="pt")
    generated = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert generated.shape[1] == inputs["input_ids"].shape[1] + 4
    card = ModelCard.load(out / "README.md")
    assert "final training loss" in card.text.lower() and f"{result.final_loss:.4f}" in card.text
    assert card.data.pipeline_tag == "video-text-to-text"


@pytest.mark.slow
def test_resume_after_kill_continues_at_the_same_step_and_data(tiny_checkpoint, movies, tmp_path):
    """SIGKILL after the first checkpoint, then the same command: the same steps on the same samples, once each, and
    the weights of a run that was never interrupted (both runs in subprocesses alike: one thread, same inputs)."""
    import yaml

    recipe = yaml.safe_load(RECIPE.read_text())
    recipe.update(model=str(tiny_checkpoint), data=[{"type": "movies", "path": str(movies)}])
    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(recipe))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

    def command(out: Path) -> list[str]:
        args = _cli_args(out)
        args[args.index("--config") + 1] = str(recipe_path)
        return [sys.executable, "-c", "import sys; from moviellm_data.cli import main; sys.exit(main(sys.argv[1:]))",
                *args]

    reference_out, out = tmp_path / "uninterrupted", tmp_path / "run"
    whole = subprocess.run(command(reference_out), env=env, capture_output=True, text=True)
    assert whole.returncode == 0, whole.stderr[-2000:]
    process = subprocess.Popen(command(out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (out / "checkpoint-6" / "data_stats.json").exists():  # written by our callback once the checkpoint is whole
        assert process.poll() is None and time.time() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "checkpoint-12").exists()
    resumed = subprocess.run(command(out), env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from checkpoint-6" in resumed.stdout

    ours = [json.loads(line) for line in (out / "samples-rank0.jsonl").read_text().splitlines()]
    reference = [json.loads(line) for line in (reference_out / "samples-rank0.jsonl").read_text().splitlines()]
    assert [e["step"] for e in ours] == list(range(1, 13))
    assert ours == reference  # same samples at the same steps: nothing skipped, nothing seen twice
    assert json.loads((out / "data_stats.json").read_text()) == json.loads((reference_out / "data_stats.json").read_text())
    from safetensors.torch import load_file

    a, b = load_file(out / "model.safetensors"), load_file(reference_out / "model.safetensors")
    for key in a:  # a lost or repeated Adam step would move nearly every trained weight by ~lr (1e-3)
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)


def _recipe(model: str, **overrides) -> TrainRecipe:
    settings = dict(model=model, data=[{"type": "movies", "path": "unused"}], max_length=512)
    settings.update(overrides)
    return TrainRecipe(**settings)


def test_freezing_presets_match_the_spec(tiny_checkpoint):
    model, _ = load_model(_recipe(str(tiny_checkpoint), freeze="stage3"), str(tiny_checkpoint))
    trained = {n.split(".")[1] if n.startswith("model.") else n.split(".")[0]
               for n, p in model.named_parameters() if p.requires_grad}
    assert trained == {"language_model", "lm_head", "token_generator"}
    generator = {n for n, p in model.named_parameters() if p.requires_grad and "token_generator" in n}
    assert generator and all(".content_projector." in n for n in generator)
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert any(".vision_model." in n for n in frozen) and any(".qformer." in n for n in frozen)
    assert any("query_tokens" in n for n in frozen) and any("context_projector" in n for n in frozen)
    apply_freeze(model, "stage3-release")
    release = {n for n, p in model.named_parameters() if p.requires_grad and "token_generator" in n}
    assert any("context_projector" in n for n in release) and any("context_key_projector" in n for n in release)
    assert not any(".qformer." in n or "query_tokens" in n for n in release)
    assert set(FREEZE_TRAINED_PREFIXES) == {"stage3", "stage3-release", "lora"}


def test_lora_trains_adapters_and_saves_a_plain_checkpoint(tiny_checkpoint, movies, tmp_path):
    pytest.importorskip("peft", reason="LoRA needs peft (the train extra)")
    from transformers import AutoModelForImageTextToText

    recipe = TrainRecipe(model=str(tiny_checkpoint), data=[{"type": "movies", "path": str(movies)}], max_length=1024,
                         freeze="lora", lora={"r": 4, "alpha": 8},
                         training={"max_steps": 2, "per_device_train_batch_size": 1, "learning_rate": 1e-2,
                                   "save_steps": 100, "report_to": "none", "use_cpu": True,
                                   "dataloader_num_workers": 0})
    model, _ = load_model(recipe, str(tiny_checkpoint))
    learning = [n for n, p in model.named_parameters() if p.requires_grad]
    assert learning and all("lora_" in n or "content_projector" in n for n in learning)
    result = run_training(recipe, output_dir=tmp_path / "lora", progress=False)
    reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path / "lora")
    base = AutoModelForImageTextToText.from_pretrained(tiny_checkpoint)
    assert result.global_step == 2
    assert not any("lora" in n for n, _ in reloaded.named_parameters())
    name = "model.language_model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(dict(reloaded.named_parameters())[name], dict(base.named_parameters())[name])


def test_rope_scaling_follows_the_original_rule():
    from transformers import LlamaConfig

    config = LlamaConfig(max_position_embeddings=4096)
    assert rope_scaling_for(65536, config) == {"rope_type": "linear", "factor": 16.0, "rope_theta": 10000.0}
    assert rope_scaling_for(4096, config) is None
    config.rope_parameters = {"rope_type": "linear", "factor": 16.0, "rope_theta": 10000.0}
    assert rope_scaling_for(65536, config) is None  # already extended


def test_one_step_equals_a_plain_reference_step(spm_processor, movies):
    """float32, same batch, same frozen set: our loss and gradients equal the spec's formulas written out here."""
    from moviellm_model.tiny import make_tiny_model

    model = make_tiny_model(spm_processor, seed=1, qformer_config={"hidden_dropout_prob": 0.0,
                                                                  "attention_probs_dropout_prob": 0.0})
    model.config.loss_chunk_size = 5
    model.train()
    apply_freeze(model, "stage3")
    reference = copy.deepcopy(model)
    record = next(iter(MovieSource(path=str(movies), conversation="movie")))
    sample = ConversationEncoder(spm_processor, max_length=100_000).encode(record)
    batch = collate([sample], spm_processor)

    loss = model(**batch).loss
    loss.backward()

    # --- the reference: spec 1.1 (tokens), 1.7 (splice), 3.4 (labels), 1.10 (plain shifted cross-entropy)
    text, _ = render_with_answer_spans(
        record.movie.prefix + "".join("<image><image>" + s for s in record.movie.subtitles) + record.movie.suffix,
        record.turns)
    ids, labels = original_labels(text)
    generator = reference.model.token_generator
    feats = torch.as_tensor(batch["pixel_values_long_videos"])
    with torch.no_grad():
        patches = reference.model.vision_model(feats)[:, 1:]  # EVA, class token dropped (long video)
    q = spm_processor.qformer_tokenizer(record.turns[0][0], return_tensors="pt")
    frames = patches.shape[0]
    queries = generator.query_tokens.expand(frames, -1, -1)
    mask = torch.cat([torch.ones(frames, queries.shape[1], dtype=torch.long), q["attention_mask"].expand(frames, -1)], 1)
    qformer = generator.qformer(input_ids=q["input_ids"].expand(frames, -1), attention_mask=mask, query_embeds=queries,
                                encoder_hidden_states=generator.qformer_layernorm(patches)).last_hidden_state
    text_queries = generator.context_query_projector(qformer[:, : queries.shape[1]])
    keys = generator.context_key_projector(patches)
    attention = (text_queries @ keys.transpose(1, 2) / math.sqrt(patches.shape[-1])).softmax(-1)
    context = generator.context_projector((attention @ patches).mean(1))  # [T, C]
    content = generator.content_projector(patches.mean(1))  # [T, C]
    visual = torch.stack([context, content], 1).reshape(2 * frames, -1)  # context, content per frame
    ids_tensor = torch.tensor(ids)
    embeds = reference.model.language_model.embed_tokens(ids_tensor.clamp(min=0))
    embeds = embeds.masked_scatter((ids_tensor == -200)[:, None].expand_as(embeds), visual)
    hidden = reference.model.language_model(inputs_embeds=embeds[None]).last_hidden_state
    logits = reference.lm_head(hidden)[0]
    ref_loss = F.cross_entropy(logits[:-1], torch.tensor(labels[1:]), ignore_index=-100)
    ref_loss.backward()

    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-5)
    ours = dict(model.named_parameters())
    compared = 0
    for name, param in reference.named_parameters():
        if param.requires_grad:
            torch.testing.assert_close(ours[name].grad, param.grad, rtol=1e-5, atol=1e-5, msg=name)
            compared += 1
        else:
            assert ours[name].grad is None
    assert compared > 10


def test_bad_training_input_gets_one_sentence(tmp_path, capsys):
    cases = [
        (["train", "--config", str(tmp_path / "none.yaml")], "does not exist"),
        (["train", "--config", str(RECIPE), "--output-dir", str(tmp_path / "o"), "--bogus-key", "1"], "--bogus-key"),
        (["train", "--config", str(RECIPE), "--output-dir", str(tmp_path / "o"), "--max-length", "abc"],
         "not a valid int"),
        (["train", "--config", str(RECIPE), "--output-dir", str(tmp_path / "o"), "--freeze", "all"], "freeze must"),
        (["train", "--config", str(RECIPE), "--output-dir", str(tmp_path / "o"), "--max-steps"], "needs a value"),
    ]
    (tmp_path / "file").write_text("x")
    cases.append((["train", "--config", str(RECIPE), "--output-dir", str(tmp_path / "file")], "is a file"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: tiny\ndata:\n  - {type: movies, path: " + str(tmp_path / "nowhere") + "}\n")
    cases.append((["train", "--config", str(bad), "--output-dir", str(tmp_path / "o2")], "does not exist"))
    for args, expected in cases:
        code = main(args)
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and expected in err, (args, err)


def test_train_help_works_without_torch():
    code = ("import sys; sys.modules['torch'] = None; from moviellm_data.cli import main; "
            "sys.exit(main(['train', '--help']))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0 and "--config" in result.stdout and "--KEY VALUE" in result.stdout


_FROM_HUB = """
import json
import moviellm_model
from huggingface_hub import ModelCard
from transformers import AutoModelForImageTextToText, AutoProcessor
model = AutoModelForImageTextToText.from_pretrained("org/tiny-tuned")
processor = AutoProcessor.from_pretrained("org/tiny-tuned")
card = ModelCard.load("org/tiny-tuned")
print(json.dumps({"sum": float(sum(p.double().sum() for p in model.parameters())), "query": model.config.qformer_query,
                  "tag": card.data.pipeline_tag, "video_id": processor.video_token_id}))
"""


def test_moviellm_push_publishes_the_trained_folder(tiny_run, tmp_path):
    from tests.hub.hub_server import HubServer
    from tests.publish.publish_support import cli, python
    from transformers import AutoModelForImageTextToText

    out, _ = tiny_run
    with HubServer() as hub:
        env = hub.env(tmp_path / "hf-home")
        pushed = cli("push", str(out), "--repo", "org/tiny-tuned", "--no-progress", env=env)
        assert pushed.returncode == 0, pushed.stderr
        remote = set(hub.files("model", "org/tiny-tuned"))
        loaded = python(_FROM_HUB, env=env)
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    assert {"README.md", "config.json", "model.safetensors", "tokenizer.json"} <= remote
    assert not any(name.startswith((".moviellm", "checkpoint-")) for name in remote)  # no training leftovers
    got = json.loads(loaded.stdout.strip().splitlines()[-1])
    local = AutoModelForImageTextToText.from_pretrained(out)
    assert got["sum"] == pytest.approx(float(sum(p.double().sum() for p in local.parameters())), rel=1e-9)
    assert got["query"] == "question" and got["tag"] == "video-text-to-text"
