"""Benchmark scripts (one per figure, see README) and the helpers they share (`_common`, `_eva`).

The scripts run as files (`python3 benchmarks/bench_model.py`); each puts the repository on `sys.path` and imports
the helpers as `benchmarks._common` / `benchmarks._eva`.
"""
