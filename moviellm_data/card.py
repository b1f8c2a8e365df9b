"""Dataset and model cards (README.md): YAML metadata the Hub reads, statistics, provenance, how to load.

The card of a movie dataset is rewritten at the end of every ``moviellm generate`` (cheap: it reads only
the manifest and ``pipeline.yaml``) and again by ``moviellm push`` with the repository id and the
dataset's contact sheet (``contact_sheet.png``, drawn at push time because it decodes frames).

A card moviellm writes ends with a seal (an HTML comment holding a digest of the text above it). A card
whose seal no longer matches was edited by hand: it is never overwritten, only checked and uploaded as
it is, so nothing a person wrote is lost.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from string import Template

import yaml

from .errors import MovieLLMError
from .features import movie_features
from .fileio import atomic_write_text
from .folder import CARD_NAME, CONTACT_SHEET_NAME, SCORES_NAME
from .shards import ManifestEntry

logger = logging.getLogger(__name__)

#: The card templates (Markdown with a ``$front_matter`` placeholder for the YAML metadata).
TEMPLATES_DIR = Path(__file__).parent / "templates" / "cards"
SHARD_PATTERN = "movies-*.tar"
TASK_CATEGORIES = ("video-text-to-text", "visual-question-answering")
_SEAL = re.compile(r"\n<!-- moviellm card ([0-9a-f]{16}) -->\n\Z")


class CardError(MovieLLMError, ValueError):
    """A dataset or model card cannot be read, parsed or written."""


# ------------------------------------------------------------------------------------------ helpers


def size_category(n: int) -> str:
    """The Hub's size_categories bucket for n examples."""
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return label
    return "1M<n<10M"


def seal(text: str) -> str:
    """Append the digest that marks ``text`` as written by moviellm and not edited since."""
    body = text.rstrip("\n") + "\n"
    return f"{body}\n<!-- moviellm card {hashlib.sha256(body.encode()).hexdigest()[:16]} -->\n"


def is_unedited(text: str) -> bool:
    """True when ``text`` carries a seal that still matches it (moviellm wrote it, nobody changed it)."""
    match = _SEAL.search(text)
    if not match:
        return False
    body = text[: match.start()]
    return hashlib.sha256(body.encode()).hexdigest()[:16] == match.group(1)


def write_card(path: str | Path, text: str) -> bool:
    """Write a sealed card atomically unless the card there was edited by hand.

    Returns True when ``path`` now holds ``text``; False when a hand-edited card was kept.
    """
    path = Path(path)
    text = seal(text) if not is_unedited(text) else text
    if path.exists():
        current = path.read_text(encoding="utf-8", errors="replace")
        if current == text:
            return True
        if not is_unedited(current):
            logger.warning("%s was edited by hand; it is kept as it is and not rewritten.", path)
            return False
    atomic_write_text(path, text)
    return True


def template(name: str) -> str:
    """The text of a card template shipped with the package, e.g. ``template("dataset_card.md")``."""
    return (TEMPLATES_DIR / name).read_text(encoding="utf-8")


def render(template_name: str, metadata: dict, **fields) -> str:
    """Fill a card template (:data:`TEMPLATES_DIR`): ``metadata`` becomes the YAML front matter."""
    front = yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True, width=1000).strip()
    return Template(template(template_name)).substitute(front_matter=front, **fields)


def load_card(path: str | Path, kind: str = "dataset"):
    """Parse a card with huggingface_hub's ``DatasetCard`` (or ``ModelCard``); one sentence if it fails."""
    from huggingface_hub import DatasetCard, ModelCard

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CardError(f"{path} does not exist; write the card first (`moviellm generate` writes it).") from None
    except (OSError, UnicodeDecodeError) as err:
        raise CardError(f"cannot read the card {path} ({err}); restore it or delete it so moviellm writes a new one.") from None
    cls = DatasetCard if kind == "dataset" else ModelCard
    if not text.startswith("---"):
        raise CardError(f"{path} has no YAML header (a block between '---' lines at the top); "
                        "restore it or delete the file so moviellm writes a new one.")
    try:
        card = cls(text)
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        line = f" at line {where.line + 2}" if where is not None else ""
        problem = getattr(err, "problem", None) or "invalid YAML"
        raise CardError(f"the YAML header of {path} does not parse ({problem}{line}); "
                        "fix it, or delete the file so moviellm writes a new one.") from None
    except (ValueError, TypeError) as err:
        raise CardError(f"the YAML header of {path} is not valid card metadata ({err}); "
                        "fix it, or delete the file so moviellm writes a new one.") from None
    return card


def card_features(card):
    """The ``datasets.Features`` that a dataset card declares (``dataset_info.features``)."""
    import datasets

    info = card.data.to_dict().get("dataset_info") or {}
    if isinstance(info, list):
        info = info[0] if info else {}
    if "features" not in info:
        raise CardError("the dataset card declares no dataset_info.features.")
    return datasets.Features._from_yaml_list(info["features"])


def _describe(settings: dict | None) -> str:
    if not settings:
        return "unknown"
    name = settings.get("name", "?")
    rest = ", ".join(f"{k} {v}" for k, v in settings.items() if k != "name" and v not in (None, "", [], {}))
    return f"{name} ({rest})" if rest else str(name)


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _duration(seconds: int) -> str:
    hours, rest = divmod(int(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def _table(rows: Iterable[tuple[str, object]]) -> str:
    return "\n".join(f"| {k} | {v} |" for k, v in rows)


# ------------------------------------------------------------------------------------ movie datasets


def _members_of_first_sample(root: Path, entries: Sequence[ManifestEntry]) -> set[str]:
    """Member extensions of the dataset's first sample, read from tar headers only (no data is read).

    Every sample carries the same members, and `datasets` drops members the card's features leave out.
    """
    import tarfile

    if not entries:
        return set()
    shard = Path(root) / entries[0].shard
    members: set[str] = set()
    try:
        with tarfile.open(shard, mode="r:") as tar:
            first = None
            for info in tar:
                key, _, ext = os.path.basename(info.name).partition(".")
                if first is None:
                    first = key
                if key != first:
                    break
                members.add(ext)
    except (OSError, tarfile.TarError):
        return set()
    return members


def hub_metadata(pretty_name: str, features, splits: dict[str, Sequence[ManifestEntry]], data_files: dict[str, str],
                 tags: Sequence[str], size: int, license: str | None = None, **extra) -> dict:
    """The YAML front matter the Hub reads, in the order moviellm's cards list it.

    ``splits`` maps split names to their manifest entries (bytes and example counts), ``data_files`` split names
    to shard patterns, ``size`` is the count that picks ``size_categories``; ``extra`` fields (e.g.
    ``annotations_creators``) follow ``language``.
    """
    import datasets

    info = datasets.DatasetInfo(features=features, splits=[
        {"name": name, "num_bytes": sum(e.bytes for e in entries), "num_examples": len(entries)}
        for name, entries in splits.items()])
    metadata: dict = {"pretty_name": pretty_name}
    if license is not None:
        metadata["license"] = license
    metadata["language"] = ["en"]
    metadata.update(extra)
    metadata.update({
        "tags": list(tags),
        "task_categories": list(TASK_CATEGORIES),
        "size_categories": [size_category(size)],
        "configs": [{"config_name": "default", "default": True,
                     "data_files": [{"split": split, "path": pattern} for split, pattern in data_files.items()]}],
        "dataset_info": info._to_yaml_dict(),
    })
    return metadata


def write_folder_card(root: str | Path, template_name: str, metadata: dict, rows: Iterable[tuple[str, object]],
                      repo_id: str | None = None, **fields) -> Path:
    """Fill ``template_name`` (statistics table from ``rows``, load path) and write it as the folder's card."""
    root = Path(root)
    text = render(template_name, metadata, statistics=_table(rows), load_path=repo_id or str(root), **fields)
    path = root / CARD_NAME
    write_card(path, text)
    return path


def front_matter(entries: list[ManifestEntry], recipe: dict, pretty_name: str, license: str = "cc-by-4.0",
                 root: Path | None = None) -> dict:
    """YAML metadata of a movie dataset: license, tags, tasks, size, configs with data_files, explicit features.

    ``root`` (the dataset folder) lets the features include members beyond json and mp4 (a style embedding,
    character portraits).
    """
    members = _members_of_first_sample(root, entries) if root is not None else set()
    features = movie_features(with_style="style.safetensors" in members,
                              with_portraits="portraits.safetensors" in members)
    return hub_metadata(
        pretty_name, features, {"train": entries}, {"train": SHARD_PATTERN},
        tags=["synthetic", "video", "long-video", "movies", "webdataset", "moviellm"], size=len(entries),
        license=license, annotations_creators=["machine-generated"], language_creators=["machine-generated"],
        source_datasets=["original"],
    )


@dataclass(frozen=True)
class MovieStatistics:
    """What a movie dataset holds, from its manifest alone (no shard is opened)."""

    movies: int
    frames: int
    frames_min: int
    frames_max: int
    qa_by_type: dict[str, int]
    genres: list[tuple[str, int]]
    shards: int
    bytes: int

    @classmethod
    def of(cls, entries: Sequence[ManifestEntry]) -> MovieStatistics:
        qa: Counter = Counter()
        for e in entries:
            qa.update(e.qa or {})
        frames = [e.frames for e in entries] or [0]
        return cls(
            movies=len(entries),
            frames=sum(frames),
            frames_min=min(frames),
            frames_max=max(frames),
            qa_by_type=dict(sorted(qa.items())),
            genres=Counter(e.genre for e in entries if e.genre).most_common(),
            shards=len({e.shard for e in entries}),
            bytes=sum(e.bytes for e in entries),
        )

    @property
    def qa_total(self) -> int:
        return sum(self.qa_by_type.values())

    def rows(self, resolution: str | None = None) -> list[tuple[str, object]]:
        per_movie = (f"{self.frames_min}" if self.frames_min == self.frames_max
                     else f"{self.frames_min}-{self.frames_max} (mean {self.frames / max(1, self.movies):.0f})")
        qa_types = ", ".join(f"{k} {v}" for k, v in self.qa_by_type.items()) or "none"
        genres = ", ".join(f"{g} {n} ({100 * n / max(1, self.movies):.0f}%)" for g, n in self.genres) or "none"
        rows = [
            ("movies", self.movies),
            ("keyframes (1 per second)", f"{self.frames} ({_duration(self.frames)} of video)"),
            ("keyframes per movie", per_movie),
            ("QA pairs", f"{self.qa_total} ({qa_types})"),
            ("QA pairs per movie", f"{self.qa_total / max(1, self.movies):.1f}"),
            ("genres", genres),
        ]
        if resolution:
            rows.append(("frame size", resolution))
        rows.append(("shards", f"{self.shards} ({human_bytes(self.bytes)})"))
        return rows


def provenance_lines(recipe: dict) -> str:
    """The recipe as a bullet list: who wrote, who drew, how it was encoded, with which package."""
    settings = recipe.get("recipe") or {}
    video = settings.get("video") or {}
    themes = settings.get("themes")
    lines = [
        f"- made with moviellm {recipe.get('moviellm_version', '?')}"
        + (f", started {recipe['created_at']}" if recipe.get("created_at") else ""),
        f"- writer: {_describe(settings.get('writer'))}",
        f"- renderer: {_describe(settings.get('renderer'))}",
        f"- video: {video.get('codec', 'h264')} in {video.get('container', 'mp4')}, {video.get('fps', 1)} frame per second"
        + (f", crf {video['crf']}" if "crf" in video else ""),
        f"- run seed: {settings.get('seed', '?')}; themes: "
        + (", ".join(themes[:10]) + (f" and {len(themes) - 10} more" if len(themes) > 10 else "") if themes
           else "the built-in theme list"),
    ]
    return "\n".join(lines)


def limitations(recipe: dict) -> str:
    """What a reader should know about how the movies were made, by writer and renderer."""
    settings = recipe.get("recipe") or {}
    writer = (settings.get("writer") or {}).get("name")
    renderer = (settings.get("renderer") or {}).get("name")
    lines = ["The movies are synthetic."]
    if writer == "procedural":
        lines.append("Scripts written by the procedural writer follow genre grammars and are repetitive by design "
                     "compared with LLM-written ones; their QA answers are true by construction.")
    elif writer:
        lines.append(f"Scripts were written by a language model ({_describe(settings.get('writer'))}); they were "
                     "validated against the movie contract, but plots and answers can carry the model's mistakes "
                     "and biases.")
    if renderer == "storyboard":
        lines.append("Storyboard frames are drawings (setting, characters in their outfit colours, the line spoken), "
                     "not photographs.")
    elif renderer:
        lines.append("Keyframes were drawn by a text-to-image model from the shot prompts: a frame can miss or "
                     "distort what its prompt describes, and characters can drift between frames.")
    lines.append("QA answers are true with respect to the script, which the frames depict.")
    return " ".join(lines)


def _resolution(recipe: dict) -> str | None:
    renderer = (recipe.get("recipe") or {}).get("renderer") or {}
    if renderer.get("width") and renderer.get("height"):
        return f"{renderer['width']} x {renderer['height']}"
    return None


def read_scores_summary(root: Path | None) -> dict | None:
    """A folder's ``scores.json`` (``moviellm score``), or None when it has none or it does not parse."""
    if root is None or not (Path(root) / SCORES_NAME).exists():
        return None
    try:
        summary = json.loads((Path(root) / SCORES_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        logger.warning("%s does not parse; the card leaves the scores out (run moviellm score again).", Path(root) / SCORES_NAME)
        return None
    return summary if isinstance(summary, dict) and isinstance(summary.get("metrics"), dict) else None


def scores_section(summary: dict | None) -> str:
    """The card's "Quality scores" section from a ``scores.json`` summary ("" without one)."""
    if not summary:
        return ""
    models = summary.get("models") or {}

    def number(value) -> str:
        return "-" if value is None else f"{value:.4f}"

    rows = [f"| {m.get('label', name)} | {number(m.get('mean'))} | {number(m.get('std'))} | {number(m.get('min'))} | "
            f"{number(m.get('max'))} | {m.get('count', 0)} {m.get('over', '')} |"
            for name, m in summary["metrics"].items()]
    return "\n".join([
        "",
        "## Quality scores",
        "",
        f"Measured with `moviellm score` over {summary.get('movies', '?')} movies ({summary.get('keyframes', '?')} "
        f"keyframes): prompt alignment with `{models.get('clip', '?')}` against each shot's prompt without the style "
        f"token, consistency with `{models.get('consistency', '?')}` (cosine similarities; higher is closer). "
        "Per-movie values are in `scores.jsonl`.",
        "",
        "| metric | mean | std | min | max | over |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
    ])


def dataset_card_text(entries: list[ManifestEntry], recipe: dict, repo_or_path: str, pretty_name: str | None = None,
                      contact_sheet: str | None = None, root: Path | None = None) -> str:
    """The card of a movie dataset from the template ``dataset_card.md`` (unsealed)."""
    pretty_name = pretty_name or "Synthetic movies (moviellm)"
    stats = MovieStatistics.of(entries)
    sheet = (f"\n![Contact sheet: frames spread over the first movies]({contact_sheet})\n" if contact_sheet else "")
    settings = recipe.get("recipe") or {}
    return render(
        "dataset_card.md",
        front_matter(entries, recipe, pretty_name, root=root),
        pretty_name=pretty_name,
        contact_sheet=sheet,
        statistics=_table(stats.rows(_resolution(recipe))),
        scores=scores_section(read_scores_summary(root)),
        load_path=repo_or_path,
        export_command=(f"moviellm pull {repo_or_path} --out movies && moviellm export llamavid movies --out llamavid-data"
                        if "/" in repo_or_path and not Path(repo_or_path).exists()
                        else f"moviellm export llamavid {repo_or_path} --out llamavid-data"),
        provenance=provenance_lines(recipe),
        command=recipe.get("command") or "(made through the Python API)",
        recipe_yaml=yaml.safe_dump(settings, sort_keys=False, allow_unicode=True, width=1000).strip(),
        limitations=limitations(recipe),
    )


def write_dataset_card(root: Path, entries: list[ManifestEntry], recipe: dict, repo_id: str | None = None) -> Path:
    """Write ``README.md`` in a movie dataset folder (atomically) and return its path.

    Cheap: reads nothing but its arguments. The contact sheet is referenced when ``contact_sheet.png``
    exists (``moviellm push`` and :func:`refresh_card` draw it). A card edited by hand is kept.
    """
    root = Path(root)
    sheet = CONTACT_SHEET_NAME if (root / CONTACT_SHEET_NAME).exists() else None
    text = dataset_card_text(entries, recipe, repo_or_path=repo_id or str(root), contact_sheet=sheet, root=root)
    path = root / CARD_NAME
    write_card(path, text)
    return path


# ------------------------------------------------------------------------------------------ model card


@dataclass(frozen=True)
class EvalRow:
    """One evaluation result for the model card's ``model-index``.

    ``task_type`` is a Hub task id (e.g. "visual-question-answering", "video-text-to-text");
    ``dataset_type`` the dataset's Hub id; ``metric_type`` e.g. "accuracy" or "gpt_score".
    """

    task_type: str
    dataset_type: str
    dataset_name: str
    metric_type: str
    metric_value: float
    metric_name: str | None = None
    dataset_split: str | None = None
    judge: str | None = None  # e.g. "gpt-3.5-turbo-0125": GPT-judged numbers drift with the judge

    @classmethod
    def from_eval_result(cls, result) -> EvalRow:
        """The row of a ``huggingface_hub.EvalResult`` read from a card."""
        config = result.metric_config or ""
        return cls(task_type=result.task_type, dataset_type=result.dataset_type, dataset_name=result.dataset_name,
                   metric_type=result.metric_type, metric_value=result.metric_value, metric_name=result.metric_name,
                   dataset_split=result.dataset_split,
                   judge=config.removeprefix("judge=") if config.startswith("judge=") else None)

    @property
    def identity(self) -> tuple:
        """What makes two rows the same result (a newer value replaces an older one)."""
        return (self.task_type, self.dataset_type, self.dataset_split, self.metric_type, self.metric_name)

    def to_eval_result(self):
        from huggingface_hub import EvalResult

        return EvalResult(task_type=self.task_type, dataset_type=self.dataset_type, dataset_name=self.dataset_name,
                          metric_type=self.metric_type, metric_value=self.metric_value,
                          metric_name=self.metric_name, dataset_split=self.dataset_split,
                          metric_config=f"judge={self.judge}" if self.judge else None)


_DEFAULT_USAGE = """from transformers import AutoModelForImageTextToText, AutoProcessor

model = AutoModelForImageTextToText.from_pretrained("{repo}")
processor = AutoProcessor.from_pretrained("{repo}")"""


def model_card_text(model_name: str, *, repo_id: str | None = None, base_model: str | None = None,
                    datasets: Sequence[str] = (), results: Sequence[EvalRow] = (), license: str = "apache-2.0",
                    description: str = "", model_facts: Sequence[tuple[str, object]] = (), training: str = "",
                    usage: str | None = None, tags: Sequence[str] = (), limitations: str = "") -> str:
    """A model card (unsealed) from ``model_card.md`` with a ``model-index`` of ``results``."""
    from huggingface_hub import ModelCardData

    data = ModelCardData(
        model_name=model_name,
        license=license,
        base_model=base_model,
        datasets=list(datasets) or None,
        library_name="transformers",
        pipeline_tag="video-text-to-text",
        tags=["llama-vid", "moviellm", "video", "long-video", *tags],
        eval_results=[r.to_eval_result() for r in results] or None,
    )
    metadata = data.to_dict()
    return render(
        "model_card.md",
        metadata,
        model_name=model_name,
        description=description or f"{model_name}: LLaMA-VID as Hugging Face model classes, made with moviellm.",
        model_facts=("| | |\n|---|---|\n" + _table(model_facts)) if model_facts else "-",
        training=training or "-",
        evaluation=evaluation_table(results),
        usage=usage or _DEFAULT_USAGE.format(repo=repo_id or model_name),
        limitations=limitations or "GPT-judged scores depend on the judge model and its version; compare "
                                   "numbers only when the judge is the same.",
    )


def evaluation_table(results: Sequence[EvalRow]) -> str:
    """The body of a model card's "Evaluation" section: one table row per result."""
    if not results:
        return "Not evaluated yet."
    table = ["| benchmark | metric | value | judge |", "|---|---|---|---|"]
    table += [f"| {r.dataset_name} | {r.metric_name or r.metric_type} | {r.metric_value} | {r.judge or '-'} |"
              for r in results]
    return "\n".join(table)


def write_model_card(folder: str | Path, model_name: str, **kwargs) -> Path:
    """Write ``README.md`` into a saved model folder (kept if edited by hand) and check that it parses."""
    path = Path(folder) / CARD_NAME
    write_card(path, model_card_text(model_name, **kwargs))
    load_card(path, kind="model")
    return path


def check_model_card_folder(folder: str | Path) -> Path:
    """A saved model folder whose card can take results: it exists, and its README.md (if any) parses."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CardError(f"--model-card {folder} is not a folder; give the saved model folder whose README.md "
                        "should list the results.")
    if (folder / CARD_NAME).exists():
        load_card(folder / CARD_NAME, kind="model")
    return folder


_EVALUATION_SECTION = re.compile(r"(^## Evaluation[ \t]*\n)(.*?)(?=^## |\Z)", re.MULTILINE | re.DOTALL)


def merge_model_results(folder: str | Path, results: Sequence[EvalRow], model_name: str | None = None) -> Path:
    """Add ``results`` to the ``model-index`` of ``folder/README.md`` (a model card), replacing older values.

    A result replaces an earlier one of the same task, dataset, split, metric and metric name; the others
    stay. Without a card, one is written from the template. In a card moviellm wrote (sealed, unedited)
    the "Evaluation" table is rewritten to match; in a hand-edited card only the YAML ``model-index``
    changes, so nothing a person wrote is lost. Returns the card's path.
    """
    from huggingface_hub import ModelCard

    folder = check_model_card_folder(folder)
    path = folder / CARD_NAME
    if not path.exists():
        return write_model_card(folder, model_name or folder.resolve().name, results=list(results))
    text = path.read_text(encoding="utf-8")
    sealed = is_unedited(text)
    body = text[: _SEAL.search(text).start()] + "\n" if sealed else text
    card = ModelCard(body)
    merged = {row.identity: row for row in (EvalRow.from_eval_result(r) for r in card.data.eval_results or [])}
    for row in results:
        merged[row.identity] = row
    rows = list(merged.values())
    card.data.eval_results = [row.to_eval_result() for row in rows]
    card.data.model_name = card.data.model_name or model_name or folder.resolve().name
    if sealed:
        card.text = _EVALUATION_SECTION.sub(lambda m: m.group(1) + "\n" + evaluation_table(rows) + "\n\n", card.text,
                                            count=1)
    new_text = card.content
    atomic_write_text(path, seal(new_text) if sealed else new_text)
    load_card(path, kind="model")
    return path


__all__ = [
    "CardError", "EvalRow", "MovieStatistics", "card_features", "check_model_card_folder", "dataset_card_text",
    "evaluation_table", "front_matter", "hub_metadata", "is_unedited", "load_card", "merge_model_results",
    "model_card_text", "read_scores_summary", "render", "scores_section", "seal", "size_category", "template",
    "write_card", "write_dataset_card",
    "write_folder_card", "write_model_card",
]
