"""One decoding step's attention over a 2-hour movie's prefix for a batch of questions: copied prefix vs shared prefix.

Shapes of `bench_answer.py` (LLaMA-VID 7B: 32 heads x 128, bf16; a 16,160-token prefix, three questions, a 256-token
tail per question), per decoder layer:

- copied: SDPA of the three rows over a static cache holding the prefix in every row (what a static/dynamic batch
  cache does), with its padding mask, PyTorch's kernel choice and cuDNN first;
- shared: `shared_prefix_attention_forward` over a `SharedPrefixCache` layout, for each prefix kernel and number of
  key splits (the prefix read once for the three rows).

Printed per variant: microseconds per layer (median of CUDA-event timings), the step's attention over 32 layers,
effective bandwidth over the bytes that must be read, and the error against float32 attention over the copied keys.
The floor of a 7B decoding step is the weights (13.5 GB) plus these bytes at the copy bandwidth measured here.

    python3 benchmarks/probe_shared_prefix.py          # one GPU, ~1 min
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks._common import cuda_median_time  # noqa: E402
from moviellm_model.shared_prefix import PrefixedStates, _prefix_settings, shared_prefix_attention_forward  # noqa: E402

HEADS, DIM, PREFIX, ROWS, TAIL, WRITTEN, LAYERS = 32, 128, 16160, 3, 256, 40, 32


class Module:
    num_key_value_groups = 1
    is_causal = True
    training = False


def timed(fn, repeats: int = 50) -> float:
    """Microseconds per call (median of CUDA-event timings)."""
    return cuda_median_time(fn, repeats) * 1e6


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

    from torch.nn.attention import SDPBackend, sdpa_kernel

    report("copied: SDPA, PyTorch's choice", lambda: torch.nn.functional.scaled_dot_product_attention(
        query, copied_k, copied_v, attn_mask=shared_mask), bytes_copied)
    for backend in (SDPBackend.CUDNN_ATTENTION, SDPBackend.EFFICIENT_ATTENTION):
        try:
            with sdpa_kernel([backend]):
                report(f"copied: SDPA {backend.name.lower()}", lambda: torch.nn.functional.scaled_dot_product_attention(
                    query, copied_k, copied_v, attn_mask=shared_mask), bytes_copied)
        except RuntimeError as error:
            print(f"copied {backend.name}: {str(error).splitlines()[0][:120]}")
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
        rows[-1] = rows[-1][:4] + (float("nan"),)  # not the whole attention: no error to compare
    except RuntimeError as error:
        print(f"expanded cuDNN: {str(error).splitlines()[0][:120]}")
    for kernel, splits in [("flash", 1), ("cudnn", 1), ("flash", 2), ("flash", 4), ("flash", 8), ("flash", 16), ("efficient", 1),
                           ("efficient", 8), ("math", 1), ("auto", 1)]:
        _prefix_settings.update(kernel=kernel, splits=splits)
        try:
            report(f"shared: {kernel}, splits {splits}", lambda: shared_prefix_attention_forward(
                Module(), query, keys, values, shared_mask), bytes_shared)
        except RuntimeError as error:
            print(f"shared {kernel} {splits}: {str(error).splitlines()[0][:120]}")
    _prefix_settings.update(kernel="auto", splits=1)

    source = torch.empty(2**30, dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    copy_us = timed(lambda: target.copy_(source), repeats=20)
    bandwidth = 2 * 2**30 / copy_us / 1e3  # GB/s, read + write
    print(f"\n{torch.cuda.get_device_name()}, torch {torch.__version__}; copy bandwidth {bandwidth:,.0f} GB/s; "
          f"prefix {PREFIX:,} tokens ({shared:,} shared + {rest} per row), {ROWS} rows, tail {TAIL}\n")
    print("| variant | us per layer | ms per step (32 layers) | GB/s over the bytes needed | rel. error |")
    print("|---|---|---|---|---|")
    for name, micro, step_ms, gbps, error in rows:
        print(f"| {name} | {micro:,.0f} | {step_ms:.2f} | {gbps:,.0f} | {error:.1e} |")
    weights_ms = 13.5e9 / (bandwidth * 1e9) * 1e3
    print(f"\nfloor of one 7B decoding step: weights {weights_ms:.2f} ms + attention bytes: copied "
          f"{bytes_copied * LAYERS / bandwidth / 1e6:.2f} ms, shared {bytes_shared * LAYERS / bandwidth / 1e6:.2f} ms")


if __name__ == "__main__":
    main()
