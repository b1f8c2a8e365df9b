"""Shared pieces of the training tests: a tiny checkpoint, tiny offline movies, a SentencePiece processor, and the
original LLaMA-VID tokenisation and label masking (llamavid-spec.md 1.9 and 3.4) written independently of ours."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import moviellm_model  # noqa: F401 - registers the Auto classes
from moviellm_model import LlamaVidImageProcessor, LlamaVidProcessor
from moviellm_model.tiny import build_bert_folder, build_tiny_checkpoint, load_bert_tokenizer

DATA = Path(__file__).resolve().parents[1] / "model" / "data"
IGNORE = -100
IMAGE = -200  # the original's placeholder id


def make_movies(out: Path, count: int, seed: int = 0) -> Path:
    from moviellm_data.pipeline import GenerateOptions, generate
    from moviellm_data.renderers import StoryboardRenderer
    from moviellm_data.writers import ProceduralWriter

    generate(GenerateOptions(out=out, movies=count, seed=seed), ProceduralWriter("tiny"),
             StoryboardRenderer(width=64, height=64), progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny-checkpoint"), seed=0)


@pytest.fixture(scope="session")
def movies(tmp_path_factory) -> Path:
    return make_movies(tmp_path_factory.mktemp("movies") / "movies", 4)


@pytest.fixture(scope="session")
def spm_processor(tmp_path_factory) -> LlamaVidProcessor:
    """A processor whose Llama tokenizer is a real SentencePiece model with the original's legacy behaviour."""
    pytest.importorskip("sentencepiece", reason="sentencepiece is needed to read tokenizer.model")
    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("spm")
    shutil.copy(DATA / "tiny_llama_spm.model", folder / "tokenizer.model")
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
        "pad_token": "<unk>", "add_bos_token": True, "add_eos_token": False, "legacy": True, "padding_side": "right",
    }))
    return LlamaVidProcessor(
        image_processor=LlamaVidImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28}),
        tokenizer=AutoTokenizer.from_pretrained(folder),
        qformer_tokenizer=load_bert_tokenizer(build_bert_folder(folder / "bert")),
        num_patches=4,
    )


# ---- the original, written from the spec --------------------------------------------------------------------------


def original_tokenize(text: str) -> list[int]:
    """transformers 4.31's slow LlamaTokenizer (legacy): "</s>" is EOS, every other piece is sentencepiece-encoded with
    its dummy prefix; then LLaVA's tokenizer_image_token: one BOS, -200 per `<image>`, every chunk tokenised alone."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(DATA / "tiny_llama_spm.model"))

    def encode(chunk: str) -> list[int]:
        ids = [1]
        for index, piece in enumerate(chunk.split("</s>")):
            if index:
                ids.append(2)
            if piece:
                ids += sp.encode(piece)
        return ids

    ids = [1]
    for index, chunk in enumerate(text.split("<image>")):
        if index:
            ids.append(IMAGE)
        ids += encode(chunk)[1:]
    return ids


def original_labels(conversation: str) -> tuple[list[int], list[int]]:
    """`preprocess_v1` / `preprocess_imgsp_v1` of LLaMA-VID (spec 3.4) on a rendered vicuna_v1 conversation."""
    ids = original_tokenize(conversation)
    target = list(ids)
    sep = " ASSISTANT: "
    cur = 1
    target[:cur] = [IGNORE] * cur
    for rou in conversation.split("</s>"):
        if rou == "":
            break
        parts = rou.split(sep)
        if len(parts) != 2:
            break
        parts[0] += sep
        round_len = len(original_tokenize(rou))
        instruction_len = len(original_tokenize(parts[0])) - 2
        target[cur : cur + instruction_len] = [IGNORE] * instruction_len
        cur += round_len
    target[cur:] = [IGNORE] * (len(target) - cur)
    assert cur == len(ids), "the original would flag a tokenization mismatch and mask the whole sample"
    return ids, target
