"""Probe of the EVA-ViT-g tower's execution options on one GPU: where a block's time goes and what each option buys.

Runs the real-size tower (39 blocks, width 1408, bf16, random weights) on 224 px frames and prints, for each variant of
`LlamaVidVisionConfig` speed options and SDPA kernel order: frames/s at the given batch sizes, the error against a
float32 run of the same weights, and (with --profile) the GPU kernels of one call grouped by name, per block. The
headline figure stays bench_model.py's; this script is for choosing what "ours" is.

    python3 benchmarks/probe_eva.py --batches 256 128 --profile
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks._common import cuda_median_time, rel_err  # noqa: E402
from moviellm_model.configuration_llamavid import LlamaVidVisionConfig  # noqa: E402
from moviellm_model.fast_paths import sdpa_priority  # noqa: E402
from moviellm_model.modeling_llamavid import LlamaVidVisionModel  # noqa: E402
from moviellm_model.vision_kernels import add_layer_norm_  # noqa: E402

# (label, fused_gelu, fused_residual_norm, SDPA kernel order or None for PyTorch's default)
VARIANTS = [
    ("fused GELU, default SDPA order", True, False, None),
    ("fused GELU, cuDNN first", True, False, ["cudnn", "flash", "efficient", "math"]),
    ("fused GELU + residual/norm, cuDNN first", True, True, ["cudnn", "flash", "efficient", "math"]),
    ("fused GELU + residual/norm, default SDPA order", True, True, None),
]


def build_tower(device, dtype) -> LlamaVidVisionModel:
    torch.manual_seed(0)
    tower = LlamaVidVisionModel(LlamaVidVisionConfig())
    with torch.no_grad():
        for name, param in tower.named_parameters():
            if name.endswith("weight") and "norm" in name:
                param.copy_(1 + 0.1 * torch.randn_like(param))
            else:
                param.normal_(0, 0.02)
    return tower.to(device=device, dtype=dtype).eval().requires_grad_(False)


def kernel_table(fn, blocks: int, top: int = 14) -> list[str]:
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    totals: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            totals[event.name] += event.device_time_total / 1e3
            counts[event.name] += 1
    whole = sum(totals.values())
    lines = [f"  GPU kernels total {whole:.2f} ms = {whole / blocks:.3f} ms per block"]
    for name, ms in sorted(totals.items(), key=lambda item: -item[1])[:top]:
        lines.append(f"  {ms / blocks:7.3f} ms/block  x{counts[name] / blocks:4.1f}  {name[:110]}")
    return lines


def check_fused_norm(device, dtype) -> str:
    norm = torch.nn.LayerNorm(1408, eps=1e-6).to(device=device, dtype=dtype)
    with torch.no_grad():
        norm.weight.copy_(1 + 0.1 * torch.randn_like(norm.weight))
        norm.bias.normal_(0, 0.1)
        stream = torch.randn(4099, 1408, device=device, dtype=dtype) * 3 + 0.5
        branch = torch.randn(4099, 1408, device=device, dtype=dtype)
        expected_stream = stream + branch  # rounded once, like the kernel
        expected = torch.nn.functional.layer_norm(expected_stream.float(), (1408,), norm.weight.float(),
                                                  norm.bias.float(), 1e-6)
        out = add_layer_norm_(stream, branch, norm)
        plain = add_layer_norm_(stream.clone(), None, norm)
        plain_expected = torch.nn.functional.layer_norm(stream.float(), (1408,), norm.weight.float(),
                                                        norm.bias.float(), 1e-6)
    return (f"fused add+LayerNorm vs float32: stream {rel_err(stream, expected_stream):.1e}, "
            f"output {rel_err(out, expected):.1e}, without bias {rel_err(plain, plain_expected):.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[256, 128])
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="print the kernel tables of the first and third variant")
    args = parser.parse_args()
    device, dtype = torch.device("cuda"), torch.bfloat16
    print(f"{torch.cuda.get_device_name()}; torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}")
    print(check_fused_norm(device, dtype))
    tower = build_tower(device, dtype)
    config = tower.config
    blocks = config.num_hidden_layers
    pixels = torch.randn(max(args.batches), 3, 224, 224, device=device, dtype=dtype)
    check = pixels[:4]
    with torch.no_grad():
        exact = copy.deepcopy(tower).float()
        truth = exact(check.float())
        del exact
        torch.cuda.empty_cache()
        table = []
        unfused = {}  # SDPA order -> output of the same options without fused_residual_norm
        for index, (label, gelu, fused, order) in enumerate(VARIANTS):
            config.fused_gelu, config.fused_residual_norm = gelu, fused
            with sdpa_priority(order, device):
                features = tower(check)
                error = rel_err(features, truth)
                key = tuple(order or ())
                if not fused:
                    unfused[key] = features
                elif key in unfused:
                    print(f"{label} vs the same without fused_residual_norm: max |diff| "
                          f"{(features.float() - unfused[key].float()).abs().max().item():.2e}, relative "
                          f"{rel_err(features, unfused[key]):.1e}")
                rates = []
                for batch in args.batches:
                    frames = pixels[:batch]
                    seconds = cuda_median_time(lambda: tower(frames), args.iters)
                    rates.append(batch / seconds)
                    torch.cuda.reset_peak_memory_stats()
                if args.profile and index in (0, 2):
                    print(f"kernels of '{label}', {args.batches[0]} frames:")
                    print("\n".join(kernel_table(lambda: tower(pixels[: args.batches[0]]), blocks)))
            table.append((label, rates, error))
            print(f"{label}: " + ", ".join(f"{b} frames {r:,.0f} frames/s" for b, r in zip(args.batches, rates))
                  + f"; error vs float32 {error:.1e}", flush=True)
    print("\n| variant | " + " | ".join(f"{b} frames/call" for b in args.batches) + " | error vs fp32 |")
    print("|---|" + "---|" * len(args.batches) + "---|")
    for label, rates, error in table:
        print(f"| {label} | " + " | ".join(f"{r:,.0f}" for r in rates) + f" | {error:.1e} |")


if __name__ == "__main__":
    started = time.monotonic()
    main()
    print(f"probe took {time.monotonic() - started:.0f} s")
