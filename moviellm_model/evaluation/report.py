"""The reports of ``moviellm eval`` in its output folder, and the model card's ``model-index`` rows.

- ``results.json``: every run judged into this folder, by run id (a protocol and the model, plus the
  baseline for comparisons): metrics, counts, the unjudged items with their reasons, the judge model
  (as asked and as the endpoint reported it), the prompt files' sha256, the predictions' sha256, the
  package version, what judging cost;
- ``results.md``: the same as Markdown tables;
- ``<run id>.png``: a bar chart per run (matplotlib, Agg canvas; skipped with a note without matplotlib);
- ``<run id>.judgements.jsonl``: every judge call's item, answer or reason, for audits.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from moviellm_data.card import EvalRow
from moviellm_data.errors import ConfigError
from moviellm_data.fileio import atomic_write_text

from .protocols import MOVIE_QA_TYPES, VCG_DIMENSIONS, Outcome

logger = logging.getLogger(__name__)

RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
RESULTS_FORMAT = 1
_DIMENSION_TITLES = {"correctness": "Correctness", "detail": "Detail orientation", "context": "Contextual understanding",
                     "temporal": "Temporal understanding", "consistency": "Consistency", "average": "Average"}


def slug(text: str) -> str:
    """A file-name-safe lower-case form of a name ("org/My Model" -> "my-model" from its last part)."""
    last = text.rstrip("/").split("/")[-1] or text
    return re.sub(r"[^a-z0-9._]+", "-", last.lower()).strip("-.") or "model"


def run_id(protocol: str, model: str, baseline: str | None = None) -> str:
    return f"{protocol}-{slug(model)}" + (f"-vs-{slug(baseline)}" if baseline else "")


# ---------------------------------------------------------------------------------- results.json


def read_results(out: Path) -> dict:
    """The folder's results.json ({"format", "runs"}), or an empty one."""
    path = Path(out) / RESULTS_JSON
    if not path.exists():
        return {"format": RESULTS_FORMAT, "runs": {}}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise ConfigError(f"{path} is not readable JSON; move it away so moviellm eval can write a new one.") from None
    if not isinstance(data, dict) or not isinstance(data.get("runs"), dict):
        raise ConfigError(f"{path} was not written by moviellm eval; move it away or choose another --out.")
    return data


def write_results(out: Path, run: dict) -> dict:
    """Put ``run`` into results.json (replacing an earlier run of the same id) and rewrite results.md."""
    data = read_results(out)
    data["format"] = RESULTS_FORMAT
    data["runs"][run["run"]] = run
    atomic_write_text(Path(out) / RESULTS_JSON, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(Path(out) / RESULTS_MD, markdown(data))
    return data


def write_judgements(path: Path, outcomes: list[Outcome]) -> None:
    lines = []
    for o in outcomes:
        item = {"id": o.task.item_id, "group": o.task.group, "order": o.task.order, "judge": o.task.judge}
        if o.judged:
            item |= {"answer": o.value.model_dump(), "judge_model": o.judge_model, "cached": o.cached}
        else:
            item |= {"unjudged": o.kind, "reason": o.reason}
        lines.append(json.dumps(item, ensure_ascii=False))
    atomic_write_text(path, "\n".join(lines) + "\n")


# ------------------------------------------------------------------------------------- Markdown


def _num(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _metric_table(run: dict) -> list[str]:
    m = run["metrics"]
    protocol = run["protocol"]
    if protocol in ("msvd-qa", "msrvtt-qa", "activitynet-qa"):
        row = m[run["benchmark"]]
        return ["| benchmark | accuracy | score (0-5) | yes | no | judged | unjudged |", "|---|---|---|---|---|---|---|",
                f"| {run['title']} | {_pct(row['accuracy'])} | {_num(row['score'])} | {row['yes']} | {row['no']} | "
                f"{row['judged']} | {row['unjudged']} |"]
    if protocol == "vcgbench":
        lines = ["| dimension | score (0-5) | judged | unjudged |", "|---|---|---|---|"]
        for name, row in m.items():
            lines.append(f"| {_DIMENSION_TITLES[name]} | {_num(row['score'])} | {row.get('judged', '')} | "
                         f"{row.get('unjudged', '')} |")
        return lines
    if protocol == "movie-compare":
        model, base = run["model_label"], run["baseline_label"]
        lines = [f"| question type | compare ratio {model} | compare ratio {base} | score {model} | score {base} | "
                 "judged | unjudged |", "|---|---|---|---|---|---|---|"]
        for name, row in m.items():
            lines.append(f"| {name} | {_num(row['compare_ratio']['model'])} | {_num(row['compare_ratio']['baseline'])} | "
                         f"{_num(row['score']['model'])} | {_num(row['score']['baseline'])} | {row['judged']} | "
                         f"{row['unjudged']} |")
        if run.get("both_orders"):
            lines.append("")
            lines.append("Both orders judged: each pair counts half a win per order, scores are the mean of both "
                         "positions. " + "; ".join(
                             f"{name}: orders agree {_pct(row['position']['orders_agree'])}, first shown chosen "
                             f"{_pct(row['position']['first_shown_chosen'])}" for name, row in m.items()) + ".")
        return lines
    lines = ["| question type | score (0-5) | judged | unjudged |", "|---|---|---|---|"]
    lines += [f"| {name} | {_num(row['score'])} | {row['judged']} | {row['unjudged']} |" for name, row in m.items()]
    return lines


def markdown(data: dict) -> str:
    """results.md: one section per run."""
    parts = ["# Evaluation results", "",
             "Scores come from an LLM judge: compare them only between runs with the same judge model, prompts and "
             "endpoint (listed under each table).", ""]
    for run in data["runs"].values():
        judge = run["judge"]
        reported = ", ".join(judge.get("reported_models") or {}) or "not reported"
        prompts = ", ".join(f"{p['file']} (sha256 {p['sha256'][:12]})" for p in run["prompts"].values())
        parts += [f"## {run['title']}: {run['model_label']}" + (f" vs {run['baseline_label']}" if run.get("baseline") else ""),
                  "", *_metric_table(run), ""]
        if run.get("chart"):
            parts += [f"![{run['title']}]({run['chart']})", ""]
        parts += [f"- judge: {judge['model']} (endpoint reported {reported}) at {judge['endpoint']}, temperature "
                  f"{judge['temperature']:g}, seed {judge['seed']}; prompts: {prompts}",
                  f"- predictions: {run['predictions']['path']} (sha256 {run['predictions']['sha256'][:12]}, "
                  f"{run['predictions']['lines']} lines)"
                  + (f"; baseline: {run['baseline']['path']} (sha256 {run['baseline']['sha256'][:12]})"
                     if run.get("baseline") else ""),
                  f"- judge calls: {run['counts']['calls']}, judged {run['counts']['judged']}, unjudged "
                  f"{run['counts']['unjudged']}" + (" (" + ", ".join(f"{k} {v}" for k, v in run["counts"]["unjudged_by_kind"].items()) + ")"
                                                     if run["counts"]["unjudged"] else ""),
                  f"- moviellm {run['moviellm_version']}, {run['created_at']}", ""]
        for item in run["unjudged"][:20]:
            parts.append(f"  - unjudged {item['group']} {item['id']}" + (f" ({item['order']})" if item["order"] else "")
                         + f": {item['reason']}")
        if len(run["unjudged"]) > 20:
            parts.append(f"  - and {len(run['unjudged']) - 20} more (see {RESULTS_JSON})")
        if run["unjudged"]:
            parts.append("")
    return "\n".join(parts).rstrip("\n") + "\n"


# ---------------------------------------------------------------------------------------- charts


def write_chart(path: Path, run: dict) -> bool:
    """A bar chart of the run's metrics; False (and a note) when matplotlib is not installed."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        logger.warning("matplotlib is not installed, so no chart was drawn; pip install 'moviellm[eval]' for charts.")
        return False
    m, protocol = run["metrics"], run["protocol"]
    title = f"{run['title']}: {run['model_label']}" + (f" vs {run['baseline_label']}" if run.get("baseline") else "")
    if protocol in ("msvd-qa", "msrvtt-qa", "activitynet-qa"):
        row = m[run["benchmark"]]
        fig = Figure(figsize=(6, 3.2))
        left, right = fig.subplots(1, 2)
        _bars(left, ["accuracy"], [100 * (row["accuracy"] or 0)], "%", 100)
        _bars(right, ["score"], [row["score"] or 0], "score (0-5)", 5)
    elif protocol in ("vcgbench", "movie-score"):
        names = [n for n in m if n != "all"]
        labels = [_DIMENSION_TITLES.get(n, n) for n in names]
        fig = Figure(figsize=(1.4 * len(names) + 2, 3.6))
        ax = fig.subplots()
        _bars(ax, labels, [m[n]["score"] or 0 for n in names], "score (0-5)", 5)
        if protocol == "vcgbench":
            ax.tick_params(axis="x", labelrotation=20)
    else:
        names = [n for n in (*MOVIE_QA_TYPES, "all") if n in m]
        fig = Figure(figsize=(9, 3.6))
        left, right = fig.subplots(1, 2)
        labels = (run["model_label"], run["baseline_label"])
        _grouped(left, names, [[m[n]["compare_ratio"][k] or 0 for n in names] for k in ("model", "baseline")],
                 labels, "compare ratio", 1)
        _grouped(right, names, [[m[n]["score"][k] or 0 for n in names] for k in ("model", "baseline")],
                 labels, "score (0-5)", 5)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    # No metadata beyond the title: nothing about the endpoint or the run goes into the image.
    fig.savefig(path, format="png", dpi=110, metadata={"Title": title, "Software": None})
    return True


def _bars(ax, labels, values, ylabel: str, top: float) -> None:
    bars = ax.bar(labels, values, color="#4C72B0")
    ax.bar_label(bars, fmt="%.2f", fontsize=8)
    ax.set_ylim(0, top * 1.1)
    ax.set_ylabel(ylabel)


def _grouped(ax, groups, series, labels, ylabel: str, top: float) -> None:
    width = 0.38
    for i, (values, label) in enumerate(zip(series, labels)):
        xs = [g + (i - 0.5) * width for g in range(len(groups))]
        bars = ax.bar(xs, values, width, label=label, color=("#4C72B0", "#DD8452")[i])
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylim(0, top * 1.15)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)


# ---------------------------------------------------------------------------------- model-index


def eval_rows(run: dict, dataset_id: str | None = None) -> list[EvalRow]:
    """The run's numbers as model-card ``model-index`` rows (accuracy in percent, scores 0-5)."""
    m, protocol = run["metrics"], run["protocol"]
    dataset = dataset_id or run["benchmark"]
    judge_models = list(run["judge"].get("reported_models") or {}) or [run["judge"]["model"]]
    prompts = ", ".join(f"{p['file']}" for p in run["prompts"].values())
    judge = f"{'/'.join(judge_models)}; prompts {prompts}"
    rows: list[EvalRow] = []

    def add(task: str, name: str, metric: str, value, metric_name: str) -> None:
        if value is not None:
            rows.append(EvalRow(task, dataset, name, metric, round(float(value), 4), metric_name=metric_name,
                                judge=judge))

    if protocol in ("msvd-qa", "msrvtt-qa", "activitynet-qa"):
        row = m[run["benchmark"]]
        add("visual-question-answering", run["title"], "accuracy",
            None if row["accuracy"] is None else 100 * row["accuracy"], "Accuracy (%)")
        add("visual-question-answering", run["title"], "gpt_score", row["score"], "Score (0-5)")
    elif protocol == "vcgbench":
        for name in (*VCG_DIMENSIONS, "average"):
            if name in m:
                add("video-text-to-text", run["title"], "gpt_score", m[name]["score"], f"{_DIMENSION_TITLES[name]} (0-5)")
    elif protocol == "movie-compare":
        base = run["baseline_label"]
        for name in MOVIE_QA_TYPES:
            if name in m:
                add("video-text-to-text", "MovieLLM long-video QA", "win_rate", m[name]["compare_ratio"]["model"],
                    f"{name.capitalize()} compare ratio vs {base}")
                add("video-text-to-text", "MovieLLM long-video QA", "gpt_score", m[name]["score"]["model"],
                    f"{name.capitalize()} score (0-5), pairwise vs {base}")
    else:
        for name in (*MOVIE_QA_TYPES, "all"):
            if name in m:
                add("video-text-to-text", "MovieLLM long-video QA", "gpt_score", m[name]["score"],
                    f"{'All questions' if name == 'all' else name.capitalize()} score (0-5)")
    return rows


__all__ = ["RESULTS_JSON", "RESULTS_MD", "eval_rows", "markdown", "read_results", "run_id", "slug", "write_chart",
           "write_judgements", "write_results"]
