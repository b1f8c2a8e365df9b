"""What a dataset folder can hold ("kinds"), and who writes each kind's card.

A folder's kind is named by its recipe (``kind`` in ``pipeline.yaml``; a folder made by ``moviellm generate``
or ``render`` names none and holds "movies"). Each kind registers the function that (re)writes its card,
the way :mod:`moviellm_data.backends` registers writers and renderers: ``moviellm push`` rewrites the card
through it, with the repository id, before anything is uploaded. A new kind of dataset registers itself
with :func:`register_kind`; nothing looks modules up by name.

The built-in kinds' card writers import their builders only when called (the builders pull in ``datasets``
and PyAV), so importing this module stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .card import CardError, write_dataset_card
from .folder import MANIFEST_NAME, RECIPE_NAME, dataset_kind, read_recipe
from .shards import read_manifest

#: ``write_card(root, repo_id, contact_sheet) -> path of the card``
CardWriter = Callable[[Path, "str | None", bool], Path]


@dataclass(frozen=True)
class DatasetKind:
    """A kind of dataset folder: its name (the recipe's ``kind``), what it holds, and its card writer."""

    name: str
    help: str
    write_card: CardWriter


KINDS: dict[str, DatasetKind] = {}


def register_kind(kind: DatasetKind) -> DatasetKind:
    """Make ``kind`` known to :func:`refresh_card` (and so to ``moviellm push``); a later registration replaces it."""
    KINDS[kind.name] = kind
    return kind


def refresh_card(root: str | Path, repo_id: str | None = None, contact_sheet: bool = True) -> Path:
    """Rewrite a dataset folder's card for publishing: with the repository id and, for movies, a contact sheet.

    A hand-edited card is left as it is. Returns the card's path.
    """
    root = Path(root)
    name = dataset_kind(root)
    if name not in KINDS:
        raise CardError(f"{root / RECIPE_NAME} names an unknown dataset kind {name!r}; "
                        f"moviellm publishes {', '.join(KINDS)}.")
    return KINDS[name].write_card(root, repo_id, contact_sheet)


# ------------------------------------------------------------------------------------------ built-in kinds


def _movies_card(root: Path, repo_id: str | None, contact_sheet: bool) -> Path:
    entries = read_manifest(root / MANIFEST_NAME)
    if not entries:
        raise CardError(f"{root / MANIFEST_NAME} lists no movies; run `moviellm generate --out {root}` first.")
    if contact_sheet:
        from .preview import write_dataset_contact_sheet  # decodes frames: only when a card is refreshed

        write_dataset_contact_sheet(root)
    return write_dataset_card(root, entries, read_recipe(root), repo_id=repo_id)


def _movie_qa_bench_card(root: Path, repo_id: str | None, contact_sheet: bool) -> Path:
    from .builders.movie_qa_bench import write_card

    return write_card(root, repo_id=repo_id)


def _video_qa_card(root: Path, repo_id: str | None, contact_sheet: bool) -> Path:
    from .builders.video_qa import write_card

    return write_card(root, repo_id=repo_id)


register_kind(DatasetKind("movies", "synthetic movies (moviellm generate, moviellm render)", _movies_card))
register_kind(DatasetKind("movie_qa_bench", "the long-video QA benchmark (MovieLLM format)", _movie_qa_bench_card))
register_kind(DatasetKind("video_qa", "short-video QA benchmarks (MSVD-QA, MSRVTT-QA, ActivityNet-QA, "
                                      "Video-ChatGPT)", _video_qa_card))

__all__ = ["DatasetKind", "KINDS", "register_kind", "refresh_card"]
