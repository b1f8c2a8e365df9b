"""The dataset card (README.md) of a movie dataset folder, from the manifest and the recipe."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from string import Template

import yaml

from cards import template

from .features import movie_features
from .shards import ManifestEntry

SHARD_PATTERN = "movies-*.tar"


def size_category(n: int) -> str:
    """The Hub's size_categories bucket for n examples."""
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return label
    return "1M<n<10M"


def front_matter(entries: list[ManifestEntry], recipe: dict, pretty_name: str, license: str = "cc-by-4.0") -> dict:
    """YAML metadata the Hub reads: license, tags, tasks, size, configs with data_files, explicit features."""
    import datasets

    info = datasets.DatasetInfo(
        features=movie_features(),
        splits=[{"name": "train", "num_bytes": sum(e.bytes for e in entries), "num_examples": len(entries)}],
    )
    return {
        "pretty_name": pretty_name,
        "license": license,
        "language": ["en"],
        "tags": ["synthetic", "video", "long-video", "movies", "webdataset", "moviellm"],
        "task_categories": ["video-text-to-text", "visual-question-answering"],
        "size_categories": [size_category(len(entries))],
        "configs": [
            {"config_name": "default", "default": True, "data_files": [{"split": "train", "path": SHARD_PATTERN}]}
        ],
        "dataset_info": info._to_yaml_dict(),
    }


def dataset_card_text(entries: list[ManifestEntry], recipe: dict, repo_or_path: str, pretty_name: str | None = None) -> str:
    """Render the card from the template in ``cards/dataset_card.md``."""
    settings = recipe.get("recipe", {})
    pretty_name = pretty_name or "Synthetic movies (moviellm)"
    qa = Counter()
    for e in entries:
        qa.update(e.qa or {})
    genres = Counter(e.genre for e in entries if e.genre)
    total_bytes = sum(e.bytes for e in entries)
    meta = yaml.safe_dump(front_matter(entries, recipe, pretty_name), sort_keys=False, allow_unicode=True).strip()
    frames = [e.frames for e in entries]
    return Template(template("dataset_card.md")).substitute(
        front_matter=meta,
        pretty_name=pretty_name,
        movies=len(entries),
        frames=sum(frames),
        frames_per_movie=f"{min(frames)}-{max(frames)}" if frames and min(frames) != max(frames) else (frames[0] if frames else 0),
        qa_total=sum(qa.values()),
        qa_by_type=", ".join(f"{k}: {v}" for k, v in sorted(qa.items())) or "none",
        genres=", ".join(f"{g} {n}" for g, n in genres.most_common()) or "none",
        shards=len({e.shard for e in entries}),
        size=_human_bytes(total_bytes),
        writer=_describe(settings.get("writer", {})),
        renderer=_describe(settings.get("renderer", {})),
        repo_or_path=repo_or_path,
        command=recipe.get("command") or "(made through the Python API)",
    )


def write_dataset_card(root: Path, entries: list[ManifestEntry], recipe: dict, repo_id: str | None = None) -> Path:
    """Write ``README.md`` in the dataset folder (atomically) and return its path."""
    root = Path(root)
    text = dataset_card_text(entries, recipe, repo_or_path=repo_id or str(root))
    path = root / "README.md"
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return path
    tmp = root / f".README.md.{os.getpid()}.tmp"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def _describe(settings: dict) -> str:
    if not settings:
        return "unknown"
    name = settings.get("name", "?")
    rest = ", ".join(f"{k} {v}" for k, v in settings.items() if k != "name")
    return f"{name} ({rest})" if rest else name


def _human_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"
