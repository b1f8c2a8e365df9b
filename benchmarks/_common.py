"""Timing, memory and error helpers shared by the benchmark scripts (reference and ours measured the same way)."""

from __future__ import annotations

import gc
import platform
import statistics
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
# Dense bf16 tensor-core peaks (no sparsity), for the "% of FLOP floor" and MFU columns.
PEAK_TFLOPS = {"H100 PCIe": 756.0, "H100 NVL": 835.0, "H100": 989.0, "H200": 989.0, "A100": 312.0}


def peak_tflops(name: str) -> float | None:
    """The dense bf16 peak of the card called `name` (as `torch.cuda.get_device_name` says), None if unknown."""
    for key, value in PEAK_TFLOPS.items():
        if key in name:
            return value
    return None


def machine_card(device: torch.device) -> str:
    """The card a result was measured on: the GPU's name, or the CPU's architecture."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.machine()})"


def entry_header(script: str, card: str, argv: Sequence[str], title: str | None = None) -> list[str]:
    """The first lines of a RESULTS.md entry: title and date, machine and versions, the command that made it."""
    import transformers

    command = f"python3 benchmarks/{script}.py " + " ".join(argv)
    return [
        f"## {title or script} — {datetime.now(timezone.utc).strftime('%Y-%m-%d')}",
        f"- machine: {card}; torch {torch.__version__}, transformers {transformers.__version__}, "
        f"Python {platform.python_version()}",
        f"- command: `{command.strip()}`",
    ]


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU), so that wall-clock times cover it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, warmup: int = 1, iters: int = 3) -> float:
    """Seconds per call (median of `iters` after `warmup`), synchronised with the device."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2]


def cuda_time(fn, iters: int = 20, warmup: int = 3) -> float:
    """Seconds per call of `fn` (CUDA events around `iters` calls, after `warmup`)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 1e3 / iters


def cuda_median_time(fn, iters: int) -> float:
    """Seconds per call of `fn`: the median of `iters` calls timed one by one with CUDA events, after one warm-up."""
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def gpu_seconds(fn, device: torch.device) -> float:
    """GPU kernel time (s) of one call of `fn`, from the profiler (nan off CUDA)."""
    if device.type != "cuda":
        return float("nan")
    from torch.profiler import ProfilerActivity, profile

    sync(device)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        sync(device)
    return sum(event.self_device_time_total for event in prof.key_averages()) / 1e6


class Peak:
    """Peak allocated GPU memory (GiB) inside the block (nan off CUDA)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.gib = float("nan")

    def __enter__(self):
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.gib = torch.cuda.max_memory_allocated(self.device) / 2**30


def profile_to(path: Path | None, label: str, fn, device: torch.device, cpu: bool = False) -> None:
    """Write the top GPU kernels (or host functions, `cpu`) of one call of `fn` to `path`, when `--profile` asks."""
    if path is None or device.type != "cuda":
        return
    from torch.profiler import ProfilerActivity, profile

    sync(device)
    activities = [ProfilerActivity.CPU, ProfilerActivity.CUDA] if cpu else [ProfilerActivity.CUDA]
    with profile(activities=activities) as prof:
        fn()
        sync(device)
    table = prof.key_averages().table(sort_by="self_cpu_time_total" if cpu else "cuda_time_total", row_limit=30,
                                      max_name_column_width=90)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(f"==== {label}\n{table}\n")


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """||ours - ref|| / ||ref|| in float64 (nan if anything is not finite)."""
    ours, ref = ours.detach().double(), ref.detach().double()
    if not (torch.isfinite(ours).all() and torch.isfinite(ref).all()):
        return float("nan")
    return float((ours - ref).norm() / ref.norm())


def failure(error: Exception, limit: int = 160) -> str:
    """An exception as one short line for a results note."""
    return f"{type(error).__name__}: {str(error).splitlines()[0][:limit]}" if str(error) else type(error).__name__


def first_working(notes: list, variants: list):
    """Run the first of `(label, fn)` variants that works on this machine; failures are noted, the winner too."""
    for index, (label, fn) in enumerate(variants):
        try:
            value = fn()
        except Exception as error:  # noqa: BLE001 - reported in the results
            if index == len(variants) - 1:
                raise
            notes.append(f"{label} failed ({failure(error)})")
            continue
        if index:
            notes.append(f"ours ran as: {label}")
        return value


def parse_with_record_options(parser, argv=None):
    """Parse `argv` with `--record` / `--results` added; `args.argv` keeps the words for the entry's command line."""
    import sys

    parser.add_argument("--record", action="store_true", help="append the entry to --results")
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "RESULTS.md")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def report(entry: str, record: bool, results: Path) -> None:
    """Print a RESULTS.md entry with its last paragraph (the ratios) last; append it to `results` with `record`."""
    body, _, last = entry.rstrip("\n").rpartition("\n\n")
    print(body + "\n")
    if record:
        with open(results, "a", encoding="utf-8") as handle:
            handle.write("\n" + entry)
        print(f"(appended to {results})\n")
    print(last)
