"""benchmarks/bench_model.py runs end to end in its --tiny mode and records a dated entry."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bench_model_tiny(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bench_model", REPO / "benchmarks" / "bench_model.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n")
    assert bench.main(["--tiny", "--frames", "8", "--decode-tokens", "4", "--iters", "1", "--record",
                       "--results", str(results)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("ratios (ours vs reference): EVA ")  # ratios last
    entry = results.read_text()
    assert entry.startswith("# Benchmark results\n\n## bench_model — ")
    for figure in ("EVA-ViT-g frames/s", "visual tokens, 8 frames", "prefill, 112 tokens", "decode at 112 tokens"):
        assert f"| {figure} |" in entry
    assert "torch " in entry and "transformers " in entry and "`python3 benchmarks/bench_model.py" in entry
    # reference and ours computed the same functions (float32 here): EVA, prefill logits, decoding, float32 yardstick
    eva = entry.split("EVA error vs float32 on the same weights (4 frames): ")[1].splitlines()[0]
    assert float(eva.split("ours vs reference ")[1]) < 1e-5
    assert float(entry.split("last-position logits, ours vs reference: relative difference ")[1].split()[0]) < 1e-5
    assert "ours generated the reference's first 5 of 5 tokens" in entry
    yardstick = entry.split("float32 yardstick")[1].splitlines()[0]
    assert float(yardstick.split("ours ")[1].split(";")[0]) < 1e-5 and yardstick.endswith(tuple("0123456789"))
