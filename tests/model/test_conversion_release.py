"""Issue 12, converting a real release: what an independent check against the original code found the converter
still got wrong, each reproduced on a synthetic checkpoint in the original layout (tests/model/original_layout.py).

- a tokenizer_config.json without `legacy` (transformers 4.31 then tokenised as legacy, transformers 5 does not);
- float16 EVA weights that bfloat16 cannot hold, beside bfloat16 Llama weights (each part keeps its precision);
- the image size, read from the image processor folder's preprocessor_config.json as the original does;
- `--bert` as a Hub id (the original fetched bert-base-uncased from the Hub);
- the release's generation settings (temperature 0.9, top_p 0.6), kept in generation_config.json.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForImageTextToText, AutoProcessor, AutoTokenizer, GenerationConfig

from moviellm_model.convert_llamavid_original import ConversionError, convert_llamavid_checkpoint

from . import original_layout as orig
from .conftest import DATA, VISION

ROOT = Path(__file__).resolve().parents[2]
MULTI_TURN = "USER: What happens? ASSISTANT: A chase.</s>USER: And then? ASSISTANT:"


def _build(tmp_path, tokenizer_dirs, processor, **options):
    llama_dir, bert_dir = tokenizer_dirs
    return orig.build_original(tmp_path / "original", llama_dir, bert_dir, qformer_vocab=len(processor.qformer_tokenizer),
                               seed=3, **options)


def _convert(parts, out, **options):
    kwargs = dict(vision_tower=parts["eva"], bert=parts["bert"], vision_num_layers=VISION["num_hidden_layers"])
    kwargs.setdefault("image_size", VISION["image_size"])
    kwargs.update(options)
    return convert_llamavid_checkpoint(parts["src"], out, **kwargs)


def test_a_release_without_a_legacy_key_tokenises_as_the_original(tmp_path, tokenizer_dirs, processor):
    spm = pytest.importorskip("sentencepiece")
    pytest.importorskip("google.protobuf")
    parts = _build(tmp_path, tokenizer_dirs, processor, sentencepiece_model=DATA / "tiny_llama_spm.model",
                   sentencepiece_legacy=None)
    report = _convert(parts, tmp_path / "out")
    assert any("no `legacy` key" in note for note in report.notes)
    # transformers 4.31's slow Llama tokenizer, legacy: every chunk between special tokens gets SentencePiece's
    # dummy prefix, so the text after </s> starts with "▁USER".
    sp = spm.SentencePieceProcessor(model_file=str(DATA / "tiny_llama_spm.model"))
    first, second = MULTI_TURN.split("</s>")
    original = [1] + sp.encode(first) + [2] + sp.encode(second)
    assert sp.id_to_piece(original[len(sp.encode(first)) + 2]).startswith("▁")
    converted = AutoTokenizer.from_pretrained(tmp_path / "out")
    assert converted(MULTI_TURN).input_ids == original
    assert AutoProcessor.from_pretrained(tmp_path / "out").tokenizer(MULTI_TURN).input_ids == original
    assert json.loads((tmp_path / "out" / "tokenizer_config.json").read_text())["legacy"] is True


def test_an_explicit_legacy_false_is_kept(tmp_path, tokenizer_dirs, processor):
    pytest.importorskip("sentencepiece")
    pytest.importorskip("google.protobuf")
    parts = _build(tmp_path, tokenizer_dirs, processor, sentencepiece_model=DATA / "tiny_llama_spm.model",
                   sentencepiece_legacy=False)
    _convert(parts, tmp_path / "out")
    assert json.loads((tmp_path / "out" / "tokenizer_config.json").read_text())["legacy"] is False
    release = AutoTokenizer.from_pretrained(parts["src"], legacy=False)
    assert AutoTokenizer.from_pretrained(tmp_path / "out")(MULTI_TURN).input_ids == release(MULTI_TURN).input_ids


def _stored(out: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for shard in out.glob("*.safetensors"):
        with safe_open(str(shard), framework="pt") as handle:
            tensors.update({key: handle.get_tensor(key) for key in handle.keys()})
    return tensors


def test_each_part_keeps_its_source_precision(tmp_path, tokenizer_dirs, processor):
    parts = _build(tmp_path, tokenizer_dirs, processor, llm_dtype=torch.bfloat16, eva_dtype=torch.float16)
    eva = torch.load(parts["eva"], weights_only=True)
    weight = eva["blocks.0.attn.qkv.weight"]
    assert weight.dtype == torch.float16 and not torch.equal(weight.to(torch.bfloat16).to(torch.float16), weight)
    report = _convert(parts, tmp_path / "out")
    stored = _stored(tmp_path / "out")
    assert stored["model.vision_model.layers.0.attn.qkv.weight"].dtype == torch.float16
    assert torch.equal(stored["model.vision_model.layers.0.attn.qkv.weight"], weight)  # not rounded through bf16
    assert stored["model.language_model.layers.0.self_attn.q_proj.weight"].dtype == torch.bfloat16
    assert json.loads((tmp_path / "out" / "config.json").read_text())["dtype"] == "bfloat16"
    assert any("keeps its source precision" in note for note in report.notes)
    # Loaded in float16, as the original ran inference, the tower is exactly eva_vit_g.pth's.
    model = AutoModelForImageTextToText.from_pretrained(tmp_path / "out", dtype=torch.float16)
    assert torch.equal(model.model.vision_model.layers[0].attn.qkv.weight, weight)
    # Asking for a dtype still casts everything.
    _convert(parts, tmp_path / "cast", dtype="bfloat16")
    assert {t.dtype for t in _stored(tmp_path / "cast").values() if t.is_floating_point()} == {torch.bfloat16}


def test_the_image_size_is_read_from_the_image_processor_folder(tmp_path, tokenizer_dirs, processor):
    # The config names ./llamavid/processor/clip-patch14-224, whose preprocessor_config.json says 28 (a tiny tower):
    # the size comes from the file, not from the "224" in the folder's name.
    parts = _build(tmp_path, tokenizer_dirs, processor, image_processor_size=VISION["image_size"])
    report = _convert(parts, tmp_path / "out", image_size=None)
    assert json.loads((tmp_path / "out" / "config.json").read_text())["vision_config"]["image_size"] == 28
    assert any("image size 28 read from" in note for note in report.notes)
    loaded = AutoProcessor.from_pretrained(tmp_path / "out")
    assert loaded.image_processor.crop_size["height"] == 28
    with pytest.raises(ConversionError, match="has no preprocessor_config.json"):
        _convert(parts, tmp_path / "o2", image_size=None, image_processor=tmp_path)


def test_the_release_generation_settings_are_kept(tmp_path, tokenizer_dirs, processor):
    parts = _build(tmp_path, tokenizer_dirs, processor)
    report = _convert(parts, tmp_path / "out")
    written = json.loads((tmp_path / "out" / "generation_config.json").read_text())
    assert (written["temperature"], written["top_p"], written["max_length"]) == (0.9, 0.6, 4096)
    assert not written.get("do_sample")
    assert any("keeps the release's temperature=0.9, top_p=0.6" in note for note in report.notes)
    model = AutoModelForImageTextToText.from_pretrained(tmp_path / "out")
    assert model.generation_config.top_p == 0.6 and not model.generation_config.do_sample
    model.save_pretrained(tmp_path / "resaved")  # transformers 5 saves the model with them
    assert GenerationConfig.from_pretrained(tmp_path / "resaved").top_p == 0.6


def test_bert_can_be_a_hub_id(tmp_path, tokenizer_dirs, processor):
    from huggingface_hub import HfApi

    from tests.hub.hub_server import FAKE_TOKEN, HubServer

    parts = _build(tmp_path, tokenizer_dirs, processor, image_processor_size=VISION["image_size"])
    with HubServer() as hub:
        api = HfApi(endpoint=hub.url, token=FAKE_TOKEN)
        api.create_repo("google-bert/bert-base-uncased")
        api.upload_folder(folder_path=str(parts["bert"]), repo_id="google-bert/bert-base-uncased")
        env = {**os.environ, **hub.env(tmp_path / "hf-home"), "PYTHONPATH": str(ROOT)}

        def convert(bert: str, out: Path) -> subprocess.CompletedProcess:
            return subprocess.run([sys.executable, "-m", "moviellm_model.convert_llamavid_original", str(parts["src"]),
                                   "--vision-tower", str(parts["eva"]), "--bert", bert, "--vision-layers", "2",
                                   "--out", str(out)], capture_output=True, text=True, env=env, timeout=300)

        done = convert("google-bert/bert-base-uncased", tmp_path / "out")
        assert done.returncode == 0, done.stderr[-2000:]
        missing = convert("google-bert/no-such-bert", tmp_path / "o2")
    assert missing.returncode == 2 and "--bert google-bert/no-such-bert is neither a local folder" in missing.stderr
    assert "Traceback" not in missing.stderr
    converted = AutoProcessor.from_pretrained(tmp_path / "out")
    assert converted.qformer_tokenizer.get_vocab() == processor.qformer_tokenizer.get_vocab()


class _RunsAShellCommand:
    """What an attacker's checkpoint holds: unpickling it would call os.system (it is never unpickled here)."""

    def __reduce__(self):
        return (os.system, ("echo the checkpoint ran code",))


def test_the_pickle_refusal_points_to_legacy_pickle_whatever_torch_calls_it(tmp_path, tokenizer_dirs, processor):
    import argparse

    parts = _build(tmp_path, tokenizer_dirs, processor)
    evil, newer = tmp_path / "evil.pth", tmp_path / "protocol4.pth"
    torch.save({"model": {"query_tokens": torch.zeros(1)}, "payload": _RunsAShellCommand()}, evil)
    torch.save({"model": {"query_tokens": torch.zeros(1)}, "args": argparse.Namespace(lr=1e-4)}, newer,
               pickle_protocol=4)
    with pytest.raises(ConversionError, match=r"Python objects besides tensors.*rerun with --legacy-pickle\. It asks "
                                              r"for \w+\.system, which no checkpoint needs"):
        _convert(parts, tmp_path / "o1", qformer=evil)
    with pytest.raises(ConversionError, match=r"Python objects besides tensors, .*\(Unsupported operand \d+\); if you "
                                              r"trust the file, rerun with --legacy-pickle\.$"):
        _convert(parts, tmp_path / "o2", qformer=newer)


def test_the_readme_says_which_rope_reproduces_the_published_long_movie_numbers(tmp_path, tokenizer_dirs, processor):
    """The README's statement names settings that exist and that the converter fills (the emulation itself is checked
    against transformers 4.31's formula in tests/model/test_modeling.py::test_original_rope_precision_option)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    paragraph = readme.split("**Which RoPE reproduces the published long-movie numbers.**", 1)[1].split("\n\n", 1)[0]
    assert 'model.config.original_rope_precision = "float16"' in paragraph and "load in float16" in paragraph
    assert "original_rope_inv_freq_dtype" in paragraph
    parts = _build(tmp_path, tokenizer_dirs, processor, llm_dtype=torch.bfloat16)
    _convert(parts, tmp_path / "out")
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["original_rope_inv_freq_dtype"] == "bfloat16" and config["original_rope_precision"] is None
    assert config["text_config"]["rope_parameters"]["rope_type"] == "linear"
