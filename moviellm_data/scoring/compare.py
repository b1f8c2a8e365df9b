"""Two renderings of the same scripts side by side (``moviellm score DIR --against OTHER``).

Movies are matched by id (``moviellm render`` keeps the scripts' ids), and every metric is compared over the movies
both folders scored: each side's mean, the mean paired difference (DIR minus OTHER) and its standard error. The
comparison is written into DIR as ``comparison-<OTHER>.md`` (a table), ``.json`` and ``.png`` (a chart).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from ..fileio import atomic_write_text
from ..folder import MOVIE_SCORES_NAME
from .metrics import METRICS, paired_difference
from .run import ScoreSettings, Scorer, read_movie_scores, score_dataset

logger = logging.getLogger(__name__)


@dataclass
class Comparison:
    """The comparison of two scored folders: per metric the paired numbers, the table, and where it was written."""

    ours: str
    theirs: str
    rows: dict
    table: str
    paths: list[Path]
    summary: dict  # the first folder's scores.json


def comparison_table(ours: str, theirs: str, rows: dict) -> str:
    """A markdown table: one row per metric, each side's mean, the paired difference and its standard error."""

    def number(value) -> str:
        return "-" if value is None else f"{value:.4f}"

    lines = [f"| metric | {ours} | {theirs} | difference | std. error | movies |", "|---|---|---|---|---|---|"]
    for name, row in rows.items():
        difference = "-" if row["difference"] is None else f"{row['difference']:+.4f}"
        lines.append(f"| {METRICS[name][0]} | {number(row['ours'])} | {number(row['theirs'])} | {difference} | "
                     f"{number(row['std_error'])} | {row['movies']} |")
    return "\n".join(lines)


def write_comparison_chart(path: Path, ours: str, theirs: str, rows: dict) -> bool:
    """Grouped bars (one group per metric, one bar per folder); False with a note when matplotlib is missing."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        logger.warning("matplotlib is not installed, so no chart was drawn; pip install 'moviellm[score]' for charts.")
        return False
    names = [n for n, row in rows.items() if row["ours"] is not None]
    fig = Figure(figsize=(2.2 * max(1, len(names)) + 2, 3.8))
    ax = fig.subplots()
    width = 0.38
    for offset, label, key in ((-width / 2, ours, "ours"), (width / 2, theirs, "theirs")):
        values = [rows[n][key] for n in names]
        bars = ax.bar([i + offset for i in range(len(names))], values, width, label=label)
        ax.bar_label(bars, labels=[f"{v:.3f}" for v in values], fontsize=7)
    ax.set_xticks(range(len(names)), [METRICS[n][0].split(" (")[0] for n in names], fontsize=8)
    ax.set_ylabel("cosine similarity")
    ax.legend(fontsize=8)
    fig.suptitle(f"{ours} vs {theirs}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110, metadata={"Software": None})
    return True


def compare_datasets(root: str | Path, other: str | Path, settings: ScoreSettings | None = None,
                     progress: bool = True, rescore: bool = False) -> Comparison:
    """Score both folders (what is not scored yet, with the same models), then compare them movie by movie."""
    root, other = Path(root), Path(other)
    scorer = Scorer(settings or ScoreSettings())
    summary = score_dataset(root, progress=progress, rescore=rescore, scorer=scorer)
    if other.resolve() != root.resolve():
        score_dataset(other, progress=progress, rescore=rescore, scorer=scorer)
    ours_lines = read_movie_scores(root / MOVIE_SCORES_NAME)
    theirs_lines = read_movie_scores(other / MOVIE_SCORES_NAME)
    ours, theirs = root.resolve().name, other.resolve().name
    if ours == theirs:
        theirs = f"{theirs} (against)"
    rows = {name: paired_difference(ours_lines, theirs_lines, name) for name in METRICS}
    table = comparison_table(ours, theirs, rows)
    stem = f"comparison-{re.sub(r'[^A-Za-z0-9_-]+', '_', other.resolve().name)}"
    models = scorer.settings.models()
    document = {"ours": str(root), "theirs": str(other), "models": models, "metrics": rows}
    paths = [atomic_write_text(root / f"{stem}.json", json.dumps(document, indent=2) + "\n")]
    text = (f"# {ours} vs {theirs}\n\nScored with `moviellm score` ({models['clip']} for CLIP-T, "
            f"{models['consistency']} for consistency); differences are {ours} minus {theirs}, paired by movie id.\n\n"
            f"{table}\n")
    paths.append(atomic_write_text(root / f"{stem}.md", text))
    if write_comparison_chart(root / f"{stem}.png", ours, theirs, rows):
        paths.append(root / f"{stem}.png")
    return Comparison(ours=ours, theirs=theirs, rows=rows, table=table, paths=paths, summary=summary)


__all__ = ["Comparison", "compare_datasets", "comparison_table", "write_comparison_chart"]
