"""The options of `moviellm convert-llamavid`, in plain argparse (no torch, no transformers).

They live apart from the converter (`convert_llamavid_original`, which imports torch at module level) so that
`moviellm convert-llamavid --help` works on the core install, where the converter itself cannot run.
"""

from __future__ import annotations

import argparse

DESCRIPTION = (
    "Convert an original LLaMA-VID or MovieLLM checkpoint (sharded .bin + config with mm_* keys + Llama tokenizer) "
    "into a self-contained transformers checkpoint that from_pretrained loads. Needs the model extra: "
    "pip install 'moviellm[model]'."
)


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of `moviellm convert-llamavid` (usable on a sub-command parser)."""
    parser.add_argument("src", help="folder of the original checkpoint (config.json, pytorch_model*.bin, tokenizer)")
    parser.add_argument("--vision-tower", help="eva_vit_g.pth (the EVA-ViT-g weights the original loads)")
    parser.add_argument(
        "--qformer",
        help="instruct_blip_vicuna7b_trimmed.pth; only used if the checkpoint has no Q-Former weights",
    )
    parser.add_argument("--bert", required=True,
                        help="bert-base-uncased: a local folder or a Hub id (the Q-Former tokenizer and config; the "
                             "original fetched bert-base-uncased from the Hub)")
    parser.add_argument("--out", required=True, help="output folder (new or empty)")
    parser.add_argument("--image-size", type=int, choices=(224, 336),
                        help="default: size.shortest_edge of the image processor folder's preprocessor_config.json, as "
                             "the original reads it (see --image-processor); 224 (336 when its name says so) with a "
                             "note when that folder is not at hand")
    parser.add_argument("--image-processor", metavar="DIR",
                        help="the CLIP image processor folder the original used (llamavid/processor/clip-patch14-224); "
                             "default: the config's image_processor path, as written or inside SRC")
    parser.add_argument("--vision-layers", type=int, default=39, help="EVA blocks to build (default 39, as BLIP-2)")
    parser.add_argument("--dtype", choices=("bfloat16", "float16", "float32"),
                        help="cast every part to this dtype; default: each part keeps its source precision (the Llama "
                             "weights theirs, the EVA tower that of eva_vit_g.pth, the Q-Former its own)")
    parser.add_argument("--max-shard-size", default="5GB", help="safetensors shard size (default 5GB)")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty output folder")
    parser.add_argument(
        "--legacy-pickle",
        action="store_true",
        help="read checkpoints that hold Python objects besides tensors with full pickle (runs code from the files; "
        "only for files you trust)",
    )
    return parser


def build_parser() -> argparse.ArgumentParser:
    """A standalone parser (`python -m moviellm_model.convert_llamavid_original`)."""
    return add_arguments(argparse.ArgumentParser(prog="moviellm convert-llamavid", description=DESCRIPTION))
