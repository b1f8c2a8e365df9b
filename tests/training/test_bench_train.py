"""benchmarks/bench_train.py runs end to end in its --tiny mode: both arms compute the same loss, the ratio is last."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bench_train_tiny(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bench_train", REPO / "benchmarks" / "bench_train.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n")
    assert bench.main(["--tiny", "--lengths", "256", "--steps", "1", "--arms", "reference", "ours",
                       "ours-keep-attention", "--record", "--results", str(results)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("ratio at 256 tokens: ")
    rows = [line for line in results.read_text().splitlines() if line.startswith("| 256 |")]
    assert [row.split(" | ")[1] for row in rows] == ["reference", "ours", "ours-keep-attention"]
    losses = {float(row.rstrip(" |").split(" | ")[-1]) for row in rows}
    assert len(losses) == 1  # same weights, same batch: the three arms compute the same loss (fp32 on the CPU)
