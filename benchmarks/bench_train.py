"""Stage-3 training step speed at 7B sizes (random weights, bf16): a plain transformers step vs ours, one process.

One long-video sample per step (batch 1, what stage 3 runs per GPU): `L` tokens, of which `L / 4` are the visual
tokens of `L / 8` movie frames given as EVA features (the frozen tower is not run) and the rest text (subtitles and
QA), with the last 256 tokens as the labelled answer. The freezing preset is `stage3` (the language model and the
content projector learn). Forward + backward only: optimizer states are excluded (one GPU cannot hold 7B AdamW
states next to a 64K-token sample; see the multi-GPU issue).

- reference: a plain transformers step: `gradient_checkpointing_enable()` (every decoder layer recomputed), SDPA with
  PyTorch's default kernel order, the standard loss over full logits (`labels=` into the model).
- ours: the shipped recipes' settings: the labelled-positions loss (`config.loss_chunk_size`: no [L, 32K] logits),
  `checkpointing: full`, SDPA kernels cuDNN first (`config.sdpa_backends`), 512-frame Q-Former chunks
  (`visual_chunk_size`), and no attention mask when the batch has no padding (what our collator sends), so SDPA runs
  its implicit causal kernel.
- ours-keep-attention (informative): ours with `checkpointing: attention` (each attention kernel's output kept, the
  rest recomputed): faster still, for more memory than the reference.

MFU = model FLOPs (3x the forward's: every language-model weight, LM head included, plus causal attention;
recomputation not counted; the same count as `moviellm train` logs) / time / 989 TFLOP/s (the H100/H200 dense bf16
peak). The losses of the two arms are printed side by side (same weights, same batch).

Usage:
    python3 benchmarks/bench_train.py                       # H200: 16K and 64K tokens, 7B sizes
    python3 benchmarks/bench_train.py --tiny                # CPU smoke run
    ... --lengths 65536 --steps 3 --record                  # append the entry to benchmarks/RESULTS.md
The ratio of our tokens/s to the reference's at the longest length is printed last.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from benchmarks._common import Peak, entry_header, machine_card, peak_tflops, sync  # noqa: E402
from benchmarks._common import parse_with_record_options  # noqa: E402
from benchmarks._llamavid import build_stage3_model  # noqa: E402
from moviellm_model.training.checkpointing import keep_attention_context  # noqa: E402
from moviellm_model.training.trainer import sequence_flops  # noqa: E402

TARGET = 1.25  # ours / reference tokens/s at 64K (issue 10), with lower peak memory
ANSWER_TOKENS = 256


def make_batch(config, length: int, device) -> dict:
    """One stage-3 sample of `length` tokens: L/8 frames (2 placeholders each) then text, the last 256 labelled."""
    frames = length // 8
    vocab = config.text_config.vocab_size
    generator = torch.Generator().manual_seed(length)
    ids = torch.randint(3, vocab, (1, length), generator=generator)
    ids[0, 0] = 1
    ids[0, 64 : 64 + 2 * frames] = config.video_token_index
    labels = torch.full_like(ids, -100)
    labels[0, -ANSWER_TOKENS:] = ids[0, -ANSWER_TOKENS:]
    patches = config.vision_config.num_patches
    features = torch.randn(frames, patches, config.vision_config.hidden_size, generator=generator) * 0.5
    qformer = torch.randint(5, config.qformer_config.vocab_size, (1, 16), generator=generator)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"input_ids": ids.to(device), "labels": labels.to(device), "attention_mask": torch.ones_like(ids).to(device),
            "video_features": features.to(device, dtype), "video_features_num_frames": torch.tensor([frames]),
            "qformer_input_ids": qformer.to(device), "qformer_attention_mask": torch.ones_like(qformer).to(device)}


ARMS = ("reference", "ours", "ours-keep-attention")


def configure(model, arm: str) -> None:
    """Switch the model between the arms (same weights)."""
    model.gradient_checkpointing_disable()
    if arm == "reference":
        model.config.loss_chunk_size = None
        model.config.sdpa_backends = None
        model.config.visual_chunk_size = 64  # the original's chunks
        model.gradient_checkpointing_enable()
        return
    model.config.visual_chunk_size = 512
    model.config.loss_chunk_size = 4096
    model.config.sdpa_backends = ["cudnn", "flash", "efficient", "math"]
    kwargs = {"use_reentrant": False}
    if arm == "ours-keep-attention":
        kwargs["context_fn"] = keep_attention_context
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def step(model, batch) -> float:
    for param in model.parameters():
        param.grad = None
    loss = model(**batch).loss
    loss.backward()
    return float(loss.detach())


def measure(model, batch, device, steps: int) -> dict:
    loss = step(model, batch)  # warm-up (kernel selection, allocator)
    sync(device)
    times = []
    with Peak(device) as peak:
        for _ in range(steps):
            start = time.perf_counter()
            step(model, batch)
            sync(device)
            times.append(time.perf_counter() - start)
    times.sort()
    return {"seconds": times[len(times) // 2], "peak_gib": peak.gib, "loss": loss}


def run(args) -> dict:
    device, config, model = build_stage3_model(args.tiny)
    card = machine_card(device)
    peak = (peak_tflops(card) or 989.0) * 1e12
    rows = []
    for length in args.lengths:
        batch = make_batch(config, length, device)
        flops = sequence_flops(config, [length])
        for arm in args.arms:
            configure(model, arm)
            arm_batch = batch if arm == "reference" else {k: v for k, v in batch.items() if k != "attention_mask"}
            result = measure(model, arm_batch, device, args.steps)
            result.update(arm=arm, length=length, tokens_per_second=length / result["seconds"],
                          mfu=flops / result["seconds"] / peak)
            rows.append(result)
            print(f"{length:>6} {arm:<9} {result['seconds']:.3f} s/step  {result['tokens_per_second']:,.0f} tok/s  "
                  f"MFU {result['mfu']:.1%}  peak {result['peak_gib']:.1f} GiB  loss {result['loss']:.4f}", flush=True)
        del batch
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return {"rows": rows, "card": card, "device": device}


def render(results, args) -> str:
    lines = entry_header("bench_train", results["card"], args.argv) + [
        f"- LLaMA-VID {'tiny' if args.tiny else '7B'} with random weights, {'bf16' if results['device'].type == 'cuda' else 'fp32'}, "
        "freeze stage3, batch 1, L/8 frames as EVA features, 256 answer tokens labelled; forward + backward, "
        f"median of {args.steps} steps after one warm-up; MFU against 989 TFLOP/s",
        "",
        "| tokens | arm | s/step | tokens/s | MFU | peak GiB | loss |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results["rows"]:
        lines.append(f"| {r['length']:,} | {r['arm']} | {r['seconds']:.3f} | {r['tokens_per_second']:,.0f} | "
                     f"{r['mfu']:.1%} | {r['peak_gib']:.1f} | {r['loss']:.4f} |")
    if args.tiny:
        lines.append("- note: tiny CPU run (smoke test of the script); its timings mean nothing")
    lines += ["", ratio(results)]
    return "\n".join(lines) + "\n"


def ratio(results) -> str:
    longest = max(r["length"] for r in results["rows"])
    ref, ours = (next(r for r in results["rows"] if r["length"] == longest and r["arm"] == arm)
                 for arm in ("reference", "ours"))
    speedup = ours["tokens_per_second"] / ref["tokens_per_second"]
    verdict = "met" if speedup >= TARGET and ours["peak_gib"] <= ref["peak_gib"] else "NOT met"
    return (f"ratio at {longest:,} tokens: {speedup:.2f}x tokens/s (target >= {TARGET}x), peak memory "
            f"{ours['peak_gib']:.1f} vs {ref['peak_gib']:.1f} GiB: {verdict}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny model on the CPU (smoke run)")
    parser.add_argument("--lengths", type=int, nargs="+", default=None, help="sequence lengths (tokens)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per arm and length")
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=["reference", "ours"],
                        help="what to measure (reference and ours are needed for the ratio)")
    args = parse_with_record_options(parser, argv)
    if args.lengths is None:
        args.lengths = [512, 1024] if args.tiny else [16384, 65536]
    results = run(args)
    entry = render(results, args)
    if args.record:
        with open(args.results, "a", encoding="utf-8") as handle:
            handle.write("\n" + entry)
    print(entry)
    return 0


if __name__ == "__main__":
    sys.exit(main())
