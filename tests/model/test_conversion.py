"""Conversion of an original-layout checkpoint: the converted model computes the original's function."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor, BertTokenizer

from moviellm_model.convert_llamavid_original import ConversionError, convert_llamavid_checkpoint, main
from moviellm_model.processing_llamavid import MOVIE_PROMPT_END, MOVIE_PROMPT_START, render_vicuna_v1

from . import original_layout as orig
from .conftest import VISION, random_images


@pytest.fixture(scope="module")
def original(tmp_path_factory, tokenizer_dirs, processor):
    llama_dir, bert_dir = tokenizer_dirs
    root = tmp_path_factory.mktemp("original")
    return orig.build_original(root, llama_dir, bert_dir, qformer_vocab=len(processor.qformer_tokenizer))


@pytest.fixture(scope="module")
def converted(tmp_path_factory, original):
    out = tmp_path_factory.mktemp("converted")
    report = convert_llamavid_checkpoint(
        original["src"], out, vision_tower=original["eva"], qformer=original["qformer"], bert=original["bert"],
        image_size=VISION["image_size"], vision_num_layers=VISION["num_hidden_layers"],
    )
    return out, report


def _state(original):
    src = original["src"]
    index = json.loads((src / "pytorch_model.bin.index.json").read_text())["weight_map"]
    state = {}
    for shard in sorted(set(index.values())):
        state.update(torch.load(src / shard, weights_only=True))
    return state


def _reference_bert_ids(original, question):
    tok = BertTokenizer.from_pretrained(original["bert"], truncation_side="left")
    tok.add_special_tokens({"bos_token": "[DEC]"})
    enc = tok([question], padding="longest", truncation=True, max_length=256, return_tensors="pt")
    return enc.input_ids, enc.attention_mask


def test_report_accounts_for_every_key(converted, original):
    out, report = converted
    state = _state(original)
    ignored_src = sum(len(keys) for reason, keys in report.ignored.items() if keys[0] in state)
    assert report.mapped[original["src"].name] + ignored_src == len(state)
    eva = torch.load(original["eva"], weights_only=True)
    ignored_eva = sum(len(keys) for reason, keys in report.ignored.items() if keys[0] in eva and keys[0] not in state)
    assert report.mapped["eva_vit_g.pth"] + ignored_eva == len(eva)
    reasons = " | ".join(report.ignored)
    assert "EVA blocks 2 and later" in reasons and "strict=False" in reasons and "inv" not in reasons.split("RoPE")[0]
    assert any("checkpoint's own Q-Former" in r for r in report.ignored)
    assert "differ from eva_vit_g.pth" in " ".join(report.notes)  # the copy in the release is not what is used
    assert "mapped" in report.summary()
    assert any("temperature=0.9, top_p=0.6" in note for note in report.notes)
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["max_length"] == 4096 and generation["eos_token_id"] == 2 and generation["top_p"] == 0.6


def test_converted_folder_is_self_contained(converted, original, tmp_path):
    out, _ = converted
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    files = {p.name for p in copy.iterdir()}
    assert {"config.json", "generation_config.json", "processor_config.json", "chat_template.jinja",
            "tokenizer.json", "qformer_tokenizer"} <= files
    assert any(name.endswith(".safetensors") for name in files) and not any(name.endswith(".bin") for name in files)
    config = json.loads((copy / "config.json").read_text())
    assert config["model_type"] == "llamavid" and config["architectures"] == ["LlamaVidForConditionalGeneration"]
    assert config["text_config"]["rope_parameters"]["rope_type"] == "linear"
    assert config["text_config"]["rope_parameters"]["factor"] == 16.0
    assert config["original_rope_inv_freq_dtype"] == "bfloat16"
    model = AutoModelForImageTextToText.from_pretrained(copy)
    processor = AutoProcessor.from_pretrained(copy)
    assert processor.image_token_id == model.config.image_token_index == config["text_config"]["vocab_size"]
    assert model.config.num_query_tokens == 4 and model.config.vision_config.num_attention_heads == 2


def test_image_logits_match_reference(converted, original):
    out, _ = converted
    model = AutoModelForImageTextToText.from_pretrained(out, attn_implementation="eager").eval()
    processor = AutoProcessor.from_pretrained(out)
    state = _state(original)
    eva = torch.load(original["eva"], weights_only=True)
    question = "Who is the main character?"
    prompt = render_vicuna_v1([{"role": "user", "content": "<image>\n" + question}])
    inputs = processor(text=prompt, images=random_images(1, seed=4), return_tensors="pt")
    with torch.no_grad():
        got = model(**inputs).logits

        # reference: EVA from eva_vit_g.pth (first 2 of 3 blocks, pos-embed interpolated), Q-Former etc. from shards
        features = orig.ref_eva(eva, inputs["pixel_values"], layers=VISION["num_hidden_layers"])
        ids, mask = _reference_bert_ids(original, question)
        visual = orig.ref_tokens(state, features, ids, mask)  # [1, 2, C]
        llm = orig.ref_llm(state, json.loads((original["src"] / "config.json").read_text()))
        original_ids = processor.original_input_ids(prompt)
        embeds = orig.ref_splice_short(llm.get_input_embeddings(), original_ids, [visual[0]])
        expected = llm(inputs_embeds=embeds).logits
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_short_video_logits_match_reference(converted, original):
    out, _ = converted
    model = AutoModelForImageTextToText.from_pretrained(out, attn_implementation="eager").eval()
    processor = AutoProcessor.from_pretrained(out)
    state, eva = _state(original), torch.load(original["eva"], weights_only=True)
    frames = torch.randint(0, 255, (4, 30, 36, 3), dtype=torch.uint8).numpy()
    question = "What happens in the video?"
    prompt = render_vicuna_v1([{"role": "user", "content": "<image>\n" + question}])
    inputs = processor(text=prompt, videos=[frames], return_tensors="pt")
    with torch.no_grad():
        got = model(**inputs).logits
        features = orig.ref_eva(eva, inputs["pixel_values_videos"], layers=VISION["num_hidden_layers"])
        ids, mask = _reference_bert_ids(original, question)
        visual = orig.ref_tokens(state, features, ids, mask).reshape(1, -1, 64)  # (P=1, F*2, C)
        llm = orig.ref_llm(state, json.loads((original["src"] / "config.json").read_text()))
        embeds = orig.ref_splice_short(llm.get_input_embeddings(), processor.original_input_ids(prompt), [visual[0]])
        expected = llm(inputs_embeds=embeds).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_long_video_logits_match_reference(converted, original):
    """A movie as the original runs it: .pkl features with CLS, feats[:, 1:], every <image> doubled, P = 1."""
    out, _ = converted
    model = AutoModelForImageTextToText.from_pretrained(out, attn_implementation="eager").eval()
    processor = AutoProcessor.from_pretrained(out)
    state, eva = _state(original), torch.load(original["eva"], weights_only=True)
    frames = processor.image_processor(random_images(6, seed=9), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        pkl_feats = orig.ref_eva(eva, frames, layers=VISION["num_hidden_layers"])  # [T, 1+P, C] like the .pkl
    inputs_string = "<image>She opens the door.<image><image>He says hello.<image><image><image>"
    question = "Who opens the door?"
    prompt = processor.build_movie_prompt(question, inputs=inputs_string)
    inputs = processor(text=prompt, video_features=[pkl_feats[:, 1:]], qformer_text=[question], return_tensors="pt")
    with torch.no_grad():
        got = model(**inputs).logits
        ids, mask = _reference_bert_ids(original, question)
        visual = orig.ref_tokens(state, pkl_feats[:, 1:], ids, mask).reshape(-1, 64)  # [2T, C]
        llm = orig.ref_llm(state, json.loads((original["src"] / "config.json").read_text()))
        original_prompt = render_vicuna_v1([{"role": "user", "content": MOVIE_PROMPT_START + inputs_string.replace(
            "<image>", "<image><image>") + MOVIE_PROMPT_END + "\n" + question}])
        embeds = orig.ref_splice_long(llm.get_input_embeddings(), processor.original_input_ids(original_prompt), visual)
        expected = llm(inputs_embeds=embeds).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    generated = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert generated.shape[1] == inputs["input_ids"].shape[1] + 3


def test_qformer_from_instructblip_when_checkpoint_has_none(tmp_path, tokenizer_dirs, processor):
    llama_dir, bert_dir = tokenizer_dirs
    parts = orig.build_original(tmp_path / "o", llama_dir, bert_dir, qformer_vocab=len(processor.qformer_tokenizer),
                                seed=1, with_qformer=False)
    with pytest.raises(ConversionError, match="--qformer"):
        convert_llamavid_checkpoint(parts["src"], tmp_path / "x", vision_tower=parts["eva"], bert=bert_dir,
                                    image_size=28, vision_num_layers=2)
    report = convert_llamavid_checkpoint(parts["src"], tmp_path / "out", vision_tower=parts["eva"],
                                         qformer=parts["qformer"], bert=bert_dir, image_size=28, vision_num_layers=2)
    assert report.mapped["instruct_blip_vicuna7b_trimmed.pth"] > 0
    assert any("language-model side" in reason for reason in report.ignored)
    model = AutoModelForImageTextToText.from_pretrained(tmp_path / "out")
    blip = torch.load(parts["qformer"], weights_only=True)["model"]
    assert torch.equal(model.model.token_generator.query_tokens, blip["query_tokens"])
    assert torch.equal(model.model.token_generator.qformer.encoder.layer[2].output_query.dense.weight,
                       blip["Qformer.bert.encoder.layer.2.output_query.dense.weight"])


def test_user_mistakes_get_one_sentence(tmp_path, original, converted):
    kwargs = dict(vision_tower=original["eva"], qformer=original["qformer"], bert=original["bert"], image_size=28,
                  vision_num_layers=2)
    with pytest.raises(ConversionError, match="not a folder"):
        convert_llamavid_checkpoint(tmp_path / "nope", tmp_path / "o1", **kwargs)
    plain = tmp_path / "vicuna"
    plain.mkdir()
    (plain / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 64}))
    with pytest.raises(ConversionError, match="not a LLaMA-VID checkpoint"):
        convert_llamavid_checkpoint(plain, tmp_path / "o2", **kwargs)
    with pytest.raises(ConversionError, match="does not exist"):
        convert_llamavid_checkpoint(original["src"], tmp_path / "o3", **{**kwargs, "vision_tower": tmp_path / "eva.pth"})
    pickled = tmp_path / "pickled.pth"
    torch.save({"model": {"query_tokens": torch.zeros(1)}, "args": argparse_namespace()}, pickled)
    with pytest.raises(ConversionError, match="Python objects.*--legacy-pickle"):
        convert_llamavid_checkpoint(original["src"], tmp_path / "o4", **{**kwargs, "qformer": pickled})
    with pytest.raises(ConversionError, match="has no ln_vision.weight"):  # read with the explicit opt-in
        convert_llamavid_checkpoint(original["src"], tmp_path / "o4", **{**kwargs, "qformer": pickled},
                                    legacy_pickle=True)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ConversionError, match="could not be read"):
        convert_llamavid_checkpoint(original["src"], tmp_path / "o5", **{**kwargs, "vision_tower": garbage})
    with pytest.raises(ConversionError, match="not empty"):
        convert_llamavid_checkpoint(original["src"], converted[0], **kwargs)
    broken = tmp_path / "broken"
    shutil.copytree(original["src"], broken)
    (broken / "pytorch_model-00002-of-00002.bin").unlink()
    with pytest.raises(ConversionError, match="does not exist"):
        convert_llamavid_checkpoint(broken, tmp_path / "o6", **kwargs)
    with pytest.raises(ConversionError, match="fewer than 5 blocks"):
        convert_llamavid_checkpoint(original["src"], tmp_path / "o7", **{**kwargs, "vision_num_layers": 5})


def test_sentencepiece_tokenizer_of_the_release(tmp_path, tokenizer_dirs, processor):
    """Releases ship tokenizer.model: converted with sentencepiece+protobuf, or refused with the pip command."""
    from .conftest import DATA

    llama_dir, bert_dir = tokenizer_dirs
    parts = orig.build_original(tmp_path / "o", llama_dir, bert_dir, qformer_vocab=len(processor.qformer_tokenizer),
                                seed=2, sentencepiece_model=DATA / "tiny_llama_spm.model")
    kwargs = dict(vision_tower=parts["eva"], bert=bert_dir, image_size=28, vision_num_layers=2)
    try:
        import google.protobuf  # noqa: F401
        import sentencepiece as spm
    except ImportError:
        with pytest.raises(ConversionError, match="pip install sentencepiece protobuf"):
            convert_llamavid_checkpoint(parts["src"], tmp_path / "out", **kwargs)
        return
    convert_llamavid_checkpoint(parts["src"], tmp_path / "out", **kwargs)
    assert (tmp_path / "out" / "tokenizer.json").is_file()
    loaded = AutoProcessor.from_pretrained(tmp_path / "out")
    sp = spm.SentencePieceProcessor(model_file=str(DATA / "tiny_llama_spm.model"))
    prompt = render_vicuna_v1([{"role": "user", "content": "<image>\nWhat happens in the video?"}])
    chunks = [[1] + sp.encode(chunk) for chunk in prompt.split("<image>")]
    assert loaded.original_input_ids(prompt) == [1] + chunks[0][1:] + [-200] + chunks[1][1:]
    assert loaded.image_token_id == 420


def argparse_namespace():
    import argparse

    return argparse.Namespace(lr=1e-4)


def test_cli(tmp_path, original, capsys):
    help_run = subprocess.run([sys.executable, "-m", "moviellm_model.convert_llamavid_original", "--help"],
                              capture_output=True, text=True, timeout=120)
    assert help_run.returncode == 0 and "--vision-tower" in help_run.stdout and "--bert" in help_run.stdout
    code = main([str(original["src"]), "--vision-tower", str(tmp_path / "missing.pth"), "--bert",
                 str(original["bert"]), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    code = main([str(original["src"]), "--vision-tower", str(original["eva"]), "--bert", str(original["bert"]),
                 "--out", str(tmp_path / "ok"), "--vision-layers", "2", "--dtype", "bfloat16"])
    out = capsys.readouterr().out
    assert code == 0 and out.startswith("Converted checkpoint written to") and "ignored" in out
    assert json.loads((tmp_path / "ok" / "config.json").read_text())["dtype"] == "bfloat16"


def test_vision_tower_from_the_checkpoint_copy(tmp_path, original):
    report = convert_llamavid_checkpoint(original["src"], tmp_path / "out", qformer=original["qformer"],
                                         bert=original["bert"], image_size=28, vision_num_layers=2)
    assert any("checkpoint's own copy" in note for note in report.notes)
    state = _state(original)
    ignored_src = sum(len(keys) for keys in report.ignored.values() if keys[0] in state)
    assert report.mapped[original["src"].name] + ignored_src == len(state)
    model = AutoModelForImageTextToText.from_pretrained(tmp_path / "out")
    assert torch.equal(model.model.vision_model.layers[1].attn.qkv.weight,
                       state["model.vision_tower.vision_tower.blocks.1.attn.qkv.weight"])
