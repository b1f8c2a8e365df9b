"""``evaluate``: judge a predictions file with one protocol and write the reports (``moviellm eval``)."""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from moviellm_data import __version__
from moviellm_data.errors import ConfigError
from moviellm_data.llm.client import ChatSettings
from moviellm_data.llm.redact import public_url

from .judges import load_judge
from .predictions import read_predictions
from .protocols import PROTOCOLS
from .report import eval_rows, run_id, write_chart, write_judgements, write_results
from .runner import JUDGE_SEED, judge

logger = logging.getLogger(__name__)

WORK_DIR = ".moviellm"
CACHE_NAME = "judge-cache.sqlite"
LOG_NAME = "eval.log"
_DEFAULT = object()


@dataclass
class EvalReport:
    """What one :func:`evaluate` call judged and wrote."""

    run: dict  # the run's entry in results.json
    out: Path
    chart: Path | None
    model_card: Path | None = None

    @property
    def unjudged(self) -> int:
        return self.run["counts"]["unjudged"]


def check_out_dir(out: str | Path) -> Path:
    """Create ``out`` (and its work folder) or say in one sentence why it cannot be written."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder for the reports.")
    try:
        (out / WORK_DIR).mkdir(parents=True, exist_ok=True)
        probe = out / WORK_DIR / f".probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ConfigError(f"cannot write to --out {out} ({err.strerror or err}); choose a folder you can write to.") from None
    return out


def evaluate(predictions: str | Path, protocol: str, settings: ChatSettings, out: str | Path, *,
             baseline: str | Path | None = None, both_orders: bool = False, cache_path=_DEFAULT,
             attempts: int = 2, progress: bool = True, model_card: str | Path | None = None,
             dataset_id: str | None = None, cache_option: str = "--judge-cache",
             command: str | None = None) -> EvalReport:
    """Judge ``predictions`` with ``protocol`` through the chat endpoint of ``settings``; write the reports in ``out``.

    Args:
        predictions: a predictions.jsonl written by ``moviellm answer`` (format in the README).
        protocol: ``msvd-qa``, ``msrvtt-qa``, ``activitynet-qa``, ``vcgbench``, ``movie-compare`` or ``movie-score``.
        settings: the judge model, endpoint, key, sampling, retries, concurrency and cost limit.
        out: the report folder (results.json, results.md, a chart, judgements; the cache in ``.moviellm/``).
        baseline: ``movie-compare`` only: the other model's predictions, joined on ``id``.
        both_orders: ``movie-compare`` only: judge each pair with each answer shown first.
        cache_path: the judge cache (default ``out/.moviellm/judge-cache.sqlite``; None: no cache).
        attempts: how often one judgement is asked from scratch when it fails (refused, unparseable, cut off).
        model_card: a saved model folder whose README.md model-index gets the results.
        dataset_id: the benchmark's Hub dataset id for the model-index (default: the benchmark's name).
        command: the command line that ran this, recorded in results.json (it never holds a key).

    Bad input raises :class:`~moviellm_data.errors.ConfigError` before anything is written or sent.
    """
    if protocol not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {protocol!r}; use one of {', '.join(PROTOCOLS)}.")
    spec = PROTOCOLS[protocol]
    if both_orders and not spec.needs_baseline:
        raise ConfigError(f"--both-orders is for --protocol movie-compare (pairwise), not {protocol}; drop it.")
    if attempts < 1:
        raise ConfigError(f"--judge-attempts must be at least 1, got {attempts}.")
    preds = read_predictions(predictions)
    base = read_predictions(baseline, option="--baseline") if baseline is not None else None
    spec.check(preds, base)
    tasks = spec.tasks(preds, base, both_orders=both_orders)
    if model_card is not None:
        from moviellm_data.card import check_model_card_folder

        check_model_card_folder(model_card)
    out = check_out_dir(out)
    if cache_path is _DEFAULT:
        cache_path = out / WORK_DIR / CACHE_NAME
    prompts = {name: load_judge(name) for name in spec.judges}

    handler = logging.FileHandler(out / LOG_NAME, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    # The log gets what the console gets (warnings such as unjudged items; everything with -v), kept with the reports.
    loggers = [logging.getLogger(name) for name in ("moviellm_data.llm", "moviellm_model.evaluation")]
    for lg in loggers:
        lg.addHandler(handler)
    try:
        logger.info("moviellm eval %s: %d judge calls for %s (sha256 %s), judge %s at %s", protocol, len(tasks),
                    preds.path, preds.sha256, settings.model, public_url(settings.base_url))
        outcomes, judged = judge(tasks, prompts, settings, cache_path, attempts=attempts, progress=progress,
                                 cache_option=cache_option)
        logger.info("judging done: %s", judged.usage.summary())
    finally:
        for lg in loggers:
            lg.removeHandler(handler)
        handler.close()

    ordered = [outcomes[t.key] for t in tasks]
    unjudged = [o for o in ordered if not o.judged]
    model_label = preds.model.name_or_path
    baseline_label = base.model.name_or_path if base is not None else None
    if base is not None and baseline_label == model_label:
        baseline_label = f"{baseline_label} (baseline)"
    rid = run_id(protocol, model_label, baseline_label)
    run = {
        "run": rid,
        "protocol": protocol,
        "title": spec.title,
        "benchmark": spec.benchmark,
        "model_label": model_label,
        "baseline_label": baseline_label,
        "predictions": preds.describe(),
        "baseline": base.describe() if base is not None else None,
        "both_orders": both_orders,
        "judge": {
            "model": settings.model,
            "reported_models": dict(sorted(judged.judge_models.items())),
            "endpoint": public_url(settings.base_url),
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            "max_tokens": settings.max_tokens,
            "seed": JUDGE_SEED,
            "structured_mode": judged.structured_mode,
            "attempts_per_item": attempts,
        },
        "prompts": {name: prompt.record() for name, prompt in prompts.items()},
        "moviellm_version": __version__,
        "command": command,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "metrics": spec.aggregate(tasks, outcomes, both_orders=both_orders),
        "counts": {"calls": len(tasks), "judged": len(tasks) - len(unjudged), "unjudged": len(unjudged),
                   "unjudged_by_kind": dict(Counter(o.kind for o in unjudged))},
        "unjudged": [{"id": o.task.item_id, "group": o.task.group, "order": o.task.order, "kind": o.kind,
                      "reason": o.reason} for o in unjudged],
        "usage": {**judged.usage.to_dict(), "http_requests": judged.attempts},
        "chart": None,
    }
    chart = out / f"{rid}.png"
    if write_chart(chart, run):
        run["chart"] = chart.name
    else:
        chart = None
    write_judgements(out / f"{rid}.judgements.jsonl", ordered)
    write_results(out, run)
    report = EvalReport(run=run, out=out, chart=chart)
    if model_card is not None:
        from moviellm_data.card import merge_model_results

        report.model_card = merge_model_results(model_card, eval_rows(run, dataset_id), model_name=None)
    return report


__all__ = ["EvalReport", "check_out_dir", "evaluate"]
