"""Tiny LLaMA-VID builders shared by the model tests: tokenizers, configs, saved models, an original-layout checkpoint.

Everything is built locally (no downloads) and saved to session temporary folders, then loaded through the real
`from_pretrained` code paths.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import moviellm_model  # noqa: F401  (registers the Auto classes)
from moviellm_model import (
    LlamaVidConfig,
    LlamaVidForConditionalGeneration,
    LlamaVidImageProcessor,
    LlamaVidProcessor,
)

from moviellm_model.tiny import (  # noqa: F401 - the builders tests import from here
    BERT_WORDS,
    CORPUS,
    TINY_NUM_QUERY as NUM_QUERY,
    TINY_QFORMER,
    TINY_TEXT as TEXT,
    TINY_VISION as VISION,
    build_bert_folder,
    build_llama_tokenizer,
    load_bert_tokenizer,
    make_tiny_model as make_model,
    tiny_config,
)

DATA = Path(__file__).resolve().parent / "data"
QFORMER_HIDDEN, QFORMER_HEADS = TINY_QFORMER["hidden_size"], TINY_QFORMER["num_attention_heads"]
QFORMER_LAYERS, QFORMER_FFN = TINY_QFORMER["num_hidden_layers"], TINY_QFORMER["intermediate_size"]


@pytest.fixture(scope="session")
def tokenizer_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tokenizers")
    return build_llama_tokenizer(root / "llama"), build_bert_folder(root / "bert")


@pytest.fixture(scope="session")
def processor(tokenizer_dirs) -> LlamaVidProcessor:
    from transformers import AutoTokenizer

    llama_dir, bert_dir = tokenizer_dirs
    return LlamaVidProcessor(
        image_processor=LlamaVidImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28}),
        tokenizer=AutoTokenizer.from_pretrained(llama_dir),
        qformer_tokenizer=load_bert_tokenizer(bert_dir),
        num_patches=(28 // 14) ** 2,
        compress_type="mean",
    )


@pytest.fixture(scope="session")
def tiny_model(processor) -> LlamaVidForConditionalGeneration:
    return make_model(processor)


@pytest.fixture(scope="session")
def saved_model_dir(tmp_path_factory, tiny_model, processor) -> Path:
    folder = tmp_path_factory.mktemp("tiny-llamavid")
    tiny_model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def random_images(count: int, size=(40, 32), seed: int = 0):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)) for _ in range(count)]
