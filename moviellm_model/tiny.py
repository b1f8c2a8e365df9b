"""Tiny random LLaMA-VID checkpoints, built offline from configs (tests, `configs/tiny-cpu.yaml`, smoke runs).

A real LLaMA-VID needs a Llama tokenizer, a BERT tokenizer and 7 B weights from the Hub. The tiny checkpoint
made here has the same structure (EVA tower, Q-Former with queries and cross-attention, context and content
tokens, Llama decoder) at widths of a few dozen, tokenizers trained on the spot with the same conventions
(sentencepiece-style byte-fallback BPE: `▁` dummy prefix, `<unk>`/`<s>`/`</s>` = 0/1/2; a bert-base-uncased
style WordPiece vocabulary plus `[DEC]`), and it is saved with `save_pretrained` so that everything downstream
loads it through the real `from_pretrained` code paths.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoTokenizer, BertTokenizer, PreTrainedTokenizerFast

from .configuration_llamavid import LlamaVidConfig
from .image_processing_llamavid import LlamaVidImageProcessor
from .modeling_llamavid import LlamaVidForConditionalGeneration
from .processing_llamavid import LlamaVidProcessor

__all__ = [
    "TINY_TEXT",
    "TINY_VISION",
    "build_bert_folder",
    "build_llama_tokenizer",
    "build_tiny_checkpoint",
    "load_bert_tokenizer",
    "make_tiny_model",
    "tiny_config",
    "tiny_processor",
]

#: Text the tiny Llama tokenizer is trained on: the prompt format's fixed sentences and movie-like words.
CORPUS = [
    "A chat between a curious user and an artificial intelligence assistant.",
    "The assistant gives helpful, detailed, and polite answers to the user's questions.",
    "USER: What happens in the video? ASSISTANT: A man walks a dog in the park.",
    "Below is a movie. Memorize the content and answer my question after watching this movie.",
    "Now the movie end. Can you provide a brief overview of the movie in just a few sentences?",
    "Can you outline the chronological sequence of events in the movie?",
    "Describe the image in detail. Who is the main character? She opens the door. He says hello.",
    "The detective finds the letter. They run to the station at night. 123 456 7890",
]

# Tiny sizes. The vision width is 2 x 88 so that the original's head rule (width // 88) holds.
TINY_VISION = dict(image_size=28, patch_size=14, hidden_size=176, num_hidden_layers=2, num_attention_heads=2,
                   intermediate_size=96)
TINY_QFORMER = dict(hidden_size=32, num_attention_heads=2, num_hidden_layers=4, intermediate_size=48)
TINY_TEXT = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=4, max_position_embeddings=64)
TINY_NUM_QUERY = 4


def build_llama_tokenizer(folder: Path) -> Path:
    """A Llama-style byte-fallback BPE tokenizer (sentencepiece conventions: '▁' dummy prefix, <unk>/<s>/</s> = 0/1/2)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tokenizer.decoder = decoders.Sequence([decoders.Metaspace(replacement="▁", prepend_scheme="first", split=False),
                                           decoders.ByteFallback(), decoders.Fuse()])
    special = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=420, special_tokens=special, show_progress=False)
    tokenizer.train_from_iterator(CORPUS * 3, trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<unk>",
        padding_side="right", model_max_length=2048,
    )
    folder.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(folder)
    return folder


BERT_WORDS = (
    "a an the is are what who where when how why can you do does in on of to and or with at for it this that video "
    "image movie man woman dog park door letter happens happen describe detail main character overview brief provide "
    "outline chronological sequence events sentences few just walks opens says hello detective finds run station night"
).split()


def build_bert_folder(folder: Path) -> Path:
    """A bert-base-uncased look-alike: WordPiece vocab.txt and config.json (hidden 32, 2 heads)."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[unused0]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "?", ".", ",", "'", "!"]
    vocab += BERT_WORDS + ["##s", "##ed", "##ing", "##ly"] + list("abcdefghijklmnopqrstuvwxyz0123456789")
    vocab += [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (folder / "config.json").write_text(json.dumps({
        "model_type": "bert", "hidden_size": TINY_QFORMER["hidden_size"],
        "num_attention_heads": TINY_QFORMER["num_attention_heads"],
        "num_hidden_layers": TINY_QFORMER["num_hidden_layers"], "intermediate_size": TINY_QFORMER["intermediate_size"],
        "hidden_act": "gelu", "layer_norm_eps": 1e-12, "vocab_size": len(vocab), "max_position_embeddings": 64,
        "pad_token_id": 0,
    }))
    return folder


def load_bert_tokenizer(folder: Path) -> BertTokenizer:
    tokenizer = BertTokenizer.from_pretrained(folder)
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    return tokenizer


def tiny_processor(folder: Path) -> LlamaVidProcessor:
    """Build both tokenizers under `folder` and return a processor for 28-pixel frames (4 patches)."""
    folder = Path(folder)
    llama_dir = build_llama_tokenizer(folder / "llama")
    bert_dir = build_bert_folder(folder / "bert")
    return LlamaVidProcessor(
        image_processor=LlamaVidImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28}),
        tokenizer=AutoTokenizer.from_pretrained(llama_dir),
        qformer_tokenizer=load_bert_tokenizer(bert_dir),
        num_patches=(TINY_VISION["image_size"] // TINY_VISION["patch_size"]) ** 2,
        compress_type="mean",
    )


def tiny_config(vocab_size: int, qformer_vocab_size: int, compress_type: str | None = "mean", **overrides) -> LlamaVidConfig:
    """A tiny LlamaVidConfig whose placeholder ids follow the Llama vocabulary (`<image>`, `<video>`)."""
    qformer = {**TINY_QFORMER, **overrides.pop("qformer_config", {})}
    return LlamaVidConfig(
        vision_config=TINY_VISION,
        qformer_config=dict(vocab_size=qformer_vocab_size, encoder_hidden_size=TINY_VISION["hidden_size"],
                            cross_attention_frequency=2, max_position_embeddings=64, **qformer),
        text_config={**dict(vocab_size=vocab_size, pad_token_id=0, bos_token_id=1, eos_token_id=2, **TINY_TEXT),
                     **overrides.pop("text_config", {})},
        num_query_tokens=TINY_NUM_QUERY,
        compress_type=compress_type,
        image_token_index=vocab_size,
        video_token_index=vocab_size + 1,
        **overrides,
    )


def make_tiny_model(processor: LlamaVidProcessor, seed: int = 0, **overrides) -> LlamaVidForConditionalGeneration:
    """A tiny random model for `processor`, with weights scaled so that every path visibly matters."""
    base_vocab = processor.image_token_id  # <image> is the first id after the Llama vocabulary
    config = tiny_config(base_vocab, qformer_vocab_size=len(processor.qformer_tokenizer), **overrides)
    torch.manual_seed(seed)
    model = LlamaVidForConditionalGeneration(config).eval()
    # Random but not degenerate: the default init leaves biases at 0 and the query tokens small.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias") or "query_tokens" in name or "q_bias" in name or "v_bias" in name:
                param.normal_(0.0, 0.2)
            elif "context_query_projector.weight" in name or "context_key_projector.weight" in name:
                param.normal_(0.0, 0.3)  # peaked context attention, so the question visibly matters
            elif "qformer.embeddings" in name and name.endswith("embeddings.weight"):
                param.normal_(0.0, 1.0)  # text as strong as the queries inside the Q-Former
            elif "qformer" in name and "attention.attention" in name and name.endswith("weight"):
                param.normal_(0.0, 0.3)
    return model


def build_tiny_checkpoint(folder: str | Path, seed: int = 0, **overrides) -> Path:
    """Save a tiny random LLaMA-VID (model + processor) to `folder`; `from_pretrained(folder)` loads it."""
    folder = Path(folder)
    processor = tiny_processor(folder / "tokenizers")
    model = make_tiny_model(processor, seed=seed, **overrides)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
