"""One decoding step's attention over a 2-hour movie's prefix for a batch of questions: copied prefix vs shared prefix.

Shapes of `bench_answer.py` (LLaMA-VID 7B: 32 heads x 128, bf16; a 16,160-token prefix, three questions, a 256-token
tail per question), per decoder layer:

- copied: SDPA of the three rows over a static cache holding the prefix in every row (what a static/dynamic batch
  cache does), with its padding mask, PyTorch's kernel choice and cuDNN first;
- shared: `shared_prefix_attention_forward` over a `SharedPrefixCache` layout (the prefix read once for the three rows),
  for each prefix kernel: our Triton split-KV kernel (its split plan, then other splits and launch shapes),
  FlashAttention-2, cuDNN and the memory-efficient kernel (with and without splitting the keys by hand).

Every variant is timed as the decoding step runs it: 32 calls (one per layer) captured in one CUDA graph, the graph's
replays timed with CUDA events (median), so launch gaps do not count (an eager call of the shared variants is mostly
launch overhead). Printed per variant: microseconds per layer, the step's attention over 32 layers, effective bandwidth
over the bytes that must be read, and the error against float32 attention over the copied keys. The floor of a 7B
decoding step is the weights (13.5 GB) plus these bytes at the copy bandwidth measured here.

    python3 benchmarks/probe_shared_prefix.py          # one GPU, ~1 min
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks._common import cuda_median_time  # noqa: E402
from moviellm_model import prefix_attention_kernel as kernel_module  # noqa: E402
from moviellm_model.shared_prefix import (  # noqa: E402
    PrefixedStates,
    _prefix_settings,
    attend_to_prefix,
    shared_prefix_attention_forward,
)

HEADS, DIM, PREFIX, ROWS, TAIL, WRITTEN, LAYERS = 32, 128, 16160, 3, 256, 40, 32


class Module:
    num_key_value_groups = 1
    is_causal = True
    training = False


def timed(fn, repeats: int = 30) -> float:
    """Microseconds per call of `fn` inside a CUDA graph of LAYERS calls (median of the graph's replays / LAYERS)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up outside the capture: kernel compilation, cuBLAS/cuDNN handles
        fn()
        fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(LAYERS):
            fn()
    return cuda_median_time(graph.replay, repeats) * 1e6 / LAYERS


def main() -> None:
    torch.manual_seed(0)
    device, dtype = "cuda", torch.bfloat16
    shared = PREFIX - PREFIX % 256
    rest = PREFIX - shared
    query = torch.randn(ROWS, HEADS, 1, DIM, device=device, dtype=dtype)
    prefix_k = torch.randn(1, HEADS, PREFIX, DIM, device=device, dtype=dtype)
    prefix_v = torch.randn(1, HEADS, PREFIX, DIM, device=device, dtype=dtype)
    own_k = torch.randn(ROWS, HEADS, TAIL, DIM, device=device, dtype=dtype)
    own_v = torch.randn(ROWS, HEADS, TAIL, DIM, device=device, dtype=dtype)
    own_k[:, :, :rest], own_v[:, :, :rest] = prefix_k[:, :, shared:], prefix_v[:, :, shared:]
    # tail: the prefix's rest, then each row's written tokens (row 1 with 3 padded positions), the rest unwritten
    own_mask = torch.zeros(ROWS, 1, 1, TAIL, dtype=torch.bool, device=device)
    own_mask[..., : rest + WRITTEN] = True
    own_mask[1, ..., rest : rest + 3] = False
    shared_mask = torch.cat([torch.ones(ROWS, 1, 1, shared, dtype=torch.bool, device=device), own_mask], dim=-1)
    copied_k = torch.cat([prefix_k[:, :, :shared].expand(ROWS, -1, -1, -1), own_k], dim=2).contiguous()
    copied_v = torch.cat([prefix_v[:, :, :shared].expand(ROWS, -1, -1, -1), own_v], dim=2).contiguous()
    reference = torch.nn.functional.scaled_dot_product_attention(
        query.float(), copied_k.float(), copied_v.float(), attn_mask=shared_mask).transpose(1, 2)
    element = 2
    bytes_copied = 2 * ROWS * (shared + TAIL) * HEADS * DIM * element
    bytes_shared = 2 * (shared + ROWS * TAIL) * HEADS * DIM * element

    rows = []

    def report(name, fn, bytes_read):
        out = fn()
        out = out[0] if isinstance(out, tuple) else out
        if out.shape != reference.shape:
            out = out.transpose(1, 2)
        error = ((out.float() - reference).norm() / reference.norm()).item()
        micro = timed(fn)
        rows.append((name, micro, micro * LAYERS / 1000, bytes_read / micro / 1e3, error))
        print(f"{name}: {micro:,.0f} us per layer, error {error:.1e}", flush=True)

    from torch.nn.attention import SDPBackend, sdpa_kernel

    report("copied: SDPA, PyTorch's choice", lambda: torch.nn.functional.scaled_dot_product_attention(
        query, copied_k, copied_v, attn_mask=shared_mask), bytes_copied)
    for backend in (SDPBackend.CUDNN_ATTENTION, SDPBackend.EFFICIENT_ATTENTION):
        try:
            with sdpa_kernel([backend]):
                report(f"copied: SDPA {backend.name.lower()}", lambda: torch.nn.functional.scaled_dot_product_attention(
                    query, copied_k, copied_v, attn_mask=shared_mask), bytes_copied)
        except Exception as error:  # noqa: BLE001 - reported, not fatal
            print(f"copied {backend.name}: {str(error).splitlines()[0][:120]}")
    defaults = (kernel_module.BLOCK_N, kernel_module.NUM_WARPS, kernel_module.NUM_STAGES)
    keys = PrefixedStates(prefix_k[:, :, :shared], own_k)
    values = PrefixedStates(prefix_v[:, :, :shared], own_v)
    # the rows as a batch over the prefix expanded without a copy (stride 0): cuDNN's decode kernel, whose reads of the
    # one copy may be served by L2 for the 2nd and 3rd row
    try:
        expanded_k = prefix_k[:, :, :shared].expand(ROWS, -1, -1, -1)
        expanded_v = prefix_v[:, :, :shared].expand(ROWS, -1, -1, -1)
        report("expanded prefix, no tail: cuDNN with log-sum-exp (prefix part only)",
               lambda: torch.ops.aten._scaled_dot_product_cudnn_attention(query, expanded_k, expanded_v, None, True,
                                                                          0.0, False, False)[0], bytes_shared)
        rows[-1] = rows[-1][:4] + (float("nan"),)  # not the whole attention: its error is not comparable
    except Exception as error:  # noqa: BLE001 - reported, not fatal
        print(f"expanded cuDNN: {str(error).splitlines()[0][:120]}")
    # the prefix kernel alone (the rows' queries folded over the one copy), without the tails and the merge
    folded = query.transpose(0, 2).reshape(1, HEADS, ROWS, DIM).contiguous()
    bytes_prefix = 2 * shared * HEADS * DIM * element
    for kernel in ("triton", "flash"):
        try:
            report(f"prefix only: {kernel}", lambda: attend_to_prefix(folded, keys.prefix, values.prefix, DIM**-0.5,
                                                                      kernel)[0], bytes_prefix)
            rows[-1] = rows[-1][:4] + (float("nan"),)  # not the whole attention: its error is not comparable
        except Exception as error:  # noqa: BLE001 - reported, not fatal
            print(f"prefix only {kernel}: {type(error).__name__}: {str(error).splitlines()[0][:160]}")
    variants = [("triton", 0, {}), ("triton", 8, {}), ("triton", 32, {}), ("triton", 64, {}),
                ("triton", 0, {"block_n": 32}), ("triton", 0, {"block_n": 128}), ("triton", 0, {"num_warps": 8}),
                ("triton", 0, {"num_stages": 2}), ("triton", 0, {"num_stages": 4}),
                ("flash", 1, {}), ("flash", 4, {}), ("flash", 8, {}), ("flash", 16, {}), ("cudnn", 1, {}),
                ("efficient", 1, {}), ("efficient", 8, {})]
    for kernel, splits, shape in variants:
        _prefix_settings.update(kernel=kernel, splits=splits)
        launch = ", ".join(f"{name} {value}" for name, value in shape.items())
        name = f"shared: {kernel}, splits {splits or 'auto'}" + (f", {launch}" if launch else "")
        kernel_module.BLOCK_N, kernel_module.NUM_WARPS, kernel_module.NUM_STAGES = (
            shape.get("block_n", defaults[0]), shape.get("num_warps", defaults[1]),
            shape.get("num_stages", defaults[2]))
        try:
            report(name, lambda: shared_prefix_attention_forward(Module(), query, keys, values, shared_mask),
                   bytes_shared)
        except Exception as error:  # noqa: BLE001 - a kernel that does not take these shapes is reported, not fatal
            print(f"{name}: {type(error).__name__}: {str(error).splitlines()[0][:160]}")
    kernel_module.BLOCK_N, kernel_module.NUM_WARPS, kernel_module.NUM_STAGES = defaults
    _prefix_settings.update(kernel="auto", splits=0)

    source = torch.empty(2**30, dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    copy_us = timed(lambda: target.copy_(source), repeats=20)
    bandwidth = 2 * 2**30 / copy_us / 1e3  # GB/s, read + write
    import triton

    print(f"\n{torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}; "
          f"copy bandwidth {bandwidth:,.0f} GB/s; "
          f"prefix {PREFIX:,} tokens ({shared:,} shared + {rest} per row), {ROWS} rows, tail {TAIL}\n")
    print("| variant | us per layer | ms per step (32 layers) | GB/s over the bytes needed | rel. error |")
    print("|---|---|---|---|---|")
    for name, micro, step_ms, gbps, error in rows:
        print(f"| {name} | {micro:,.0f} | {step_ms:.2f} | {gbps:,.0f} | {error:.1e} |")
    weights_ms = 13.5e9 / (bandwidth * 1e9) * 1e3
    print(f"\nfloor of one 7B decoding step: weights {weights_ms:.2f} ms + attention bytes: copied "
          f"{bytes_copied * LAYERS / bandwidth / 1e6:.2f} ms, shared {bytes_shared * LAYERS / bandwidth / 1e6:.2f} ms")
    fastest = min((row for row in rows if row[0].startswith("shared")), key=lambda row: row[1])
    print(f"fastest shared variant: {fastest[0]} ({fastest[1]:,.0f} us per layer)")


if __name__ == "__main__":
    main()
