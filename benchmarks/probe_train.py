"""Where a 7B stage-3 step spends its time (H200, random weights, bf16): the notes behind bench_train's choices.

Parts, one sample of `--length` tokens:
- visual tokens of the sample's frames (EVA features -> Q-Former -> context/content tokens), forward only (the tower,
  Q-Former and context projections are frozen), with 64- and 512-frame chunks (`config.visual_chunk_size`);
- the language model alone (inputs_embeds, the LLM and LM head learn), forward + backward, under variants:
  checkpointing (`full` / `attention`: SDPA outputs kept), SDPA kernel order (PyTorch's default / cuDNN first,
  applied to the whole step so that recomputation uses it too) and loss (full logits / labelled positions only).
The SDPA kernels each variant ran are counted from the dispatcher.

Usage: python3 benchmarks/probe_train.py [--length 65536] [--tiny]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from benchmarks._common import sync  # noqa: E402
from benchmarks._llamavid import build_stage3_model  # noqa: E402
from moviellm_model.losses import labelled_positions_lm_loss  # noqa: E402
from moviellm_model.training.checkpointing import keep_attention_context  # noqa: E402
from moviellm_model.training.trainer import sequence_flops  # noqa: E402


class CountSDPA(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if "attention" in func.__name__:
            self.ops[func.__name__.split(".")[0]] += 1
        return func(*args, **(kwargs or {}))


def kernel_order(name: str, device):
    if name == "default" or device.type != "cuda":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    order = [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    return sdpa_kernel(order, set_priority=True)


def timed(fn, device, iters=1):
    fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    sync(device)
    return (time.perf_counter() - start) / iters


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--length", type=int, default=65536)
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args(argv)
    device, config, model = build_stage3_model(args.tiny)
    dtype = next(model.parameters()).dtype
    length = 1024 if args.tiny else args.length
    frames = length // 8
    peak = 989e12

    # ---- visual tokens
    feats = torch.randn(frames, config.vision_config.num_patches, config.vision_config.hidden_size, device=device,
                        dtype=dtype) * 0.5
    q = torch.randint(5, config.qformer_config.vocab_size, (1, 16), device=device)
    for chunk in (64, 512):
        model.config.visual_chunk_size = chunk
        seconds = timed(lambda: model.model.get_long_video_features(feats, [frames], q, torch.ones_like(q)), device)
        print(f"visual tokens, {frames} frames, chunk {chunk}: {seconds:.3f} s", flush=True)
    del feats

    # ---- language model alone
    lm, head = model.model.language_model, model.lm_head
    width = config.text_config.hidden_size
    embeds = torch.randn(1, length, width, device=device, dtype=dtype) * 0.02
    labels = torch.full((1, length), -100, device=device)
    labels[0, -256:] = torch.randint(3, config.text_config.vocab_size, (256,), device=device)
    flops = sequence_flops(config, [length])

    def step(loss_kind: str):
        for p in model.parameters():
            p.grad = None
        hidden = lm(inputs_embeds=embeds).last_hidden_state
        if loss_kind == "full":
            logits = head(hidden).float()
            loss = F.cross_entropy(logits[0, :-1], labels[0, 1:], ignore_index=-100)
        else:
            loss = labelled_positions_lm_loss(hidden, head, labels)
        loss.backward()

    variants = [("full", "default", "full"), ("full", "default", "labelled"), ("full", "cudnn", "labelled"),
                ("attention", "default", "labelled"), ("attention", "cudnn", "labelled")]
    for checkpointing, kernels, loss_kind in variants:
        model.gradient_checkpointing_disable()
        kwargs = {"use_reentrant": False}
        if checkpointing == "attention":
            kwargs["context_fn"] = keep_attention_context
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        with kernel_order(kernels, device):
            counter = CountSDPA()
            with counter:
                step(loss_kind)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            seconds = timed(lambda: step(loss_kind), device)
        gib = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
        print(f"LM {length} ckpt={checkpointing:<9} sdpa={kernels:<7} loss={loss_kind:<8} {seconds:7.3f} s "
              f"{length / seconds:8,.0f} tok/s MFU {flops / seconds / peak:6.1%} peak {gib:5.1f} GiB "
              f"ops {dict(counter.ops)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
