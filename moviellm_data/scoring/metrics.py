"""The quality scores of one movie, and of a dataset, from L2-normalised embeddings (plain numpy).

Per movie:

- ``clip_t`` (prompt alignment): for every keyframe, the cosine between its CLIP image embedding and the CLIP text
  embedding of its shot's prompt *without* the style token (the shot as written, character names replaced by their
  lookalikes, as the image model saw it); the movie's value is the mean over its keyframes. Raw cosine (the papers'
  "CLIP score" is 100 x this, clipped at 0).
- ``character_consistency`` (CLIP-I / DINO-I between frames of the same character): for every character shown in at
  least two keyframes, the mean cosine between the global image embeddings of those keyframes (every pair once);
  the movie's value is the mean over its characters.
- ``character_portrait_similarity``: for every character with a portrait in the movie (IP-Adapter renders), the
  mean cosine between the keyframes that show it and its portrait; the movie's value is the mean over characters.
- ``style_consistency``: the mean cosine between the style descriptors (feature statistics, :mod:`.embedders`) of
  every pair of the movie's keyframes.

A metric that cannot be measured (one keyframe, nobody shown twice, no portraits) is None, never a made-up number.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

#: metric -> (label, what one value is measured over), in the order reports list them.
METRICS: dict[str, tuple[str, str]] = {
    "clip_t": ("prompt alignment (CLIP-T, cosine)", "keyframes"),
    "character_consistency": ("character consistency (same character, keyframe pairs)", "movies"),
    "character_portrait_similarity": ("character vs its portrait", "movies"),
    "style_consistency": ("style consistency (keyframe pairs)", "movies"),
}


def mean_pairwise_similarity(embeddings: np.ndarray) -> float | None:
    """Mean cosine over every pair of rows of L2-normalised ``embeddings`` [N, D] (None below two rows)."""
    n = len(embeddings)
    if n < 2:
        return None
    e = np.asarray(embeddings, dtype=np.float64)
    total = e.sum(axis=0)
    # sum over all ordered pairs i != j of <e_i, e_j> = |sum e|^2 - sum |e_i|^2: O(N D), not O(N^2 D)
    return float((total @ total - np.einsum("nd,nd->", e, e)) / (n * (n - 1)))


def prompt_alignment(image_embeddings: np.ndarray, text_embeddings: np.ndarray) -> np.ndarray:
    """Per row: the cosine between an image embedding and the text embedding of the same row."""
    return np.einsum("nd,nd->n", np.asarray(image_embeddings, np.float64), np.asarray(text_embeddings, np.float64))


def _mean(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def movie_scores(frame_characters: Sequence[Sequence[str]], clip_t: np.ndarray, image_global: np.ndarray,
                 style: np.ndarray, portraits: Mapping[str, np.ndarray] | None = None) -> dict:
    """The scores of one movie.

    Args:
        frame_characters: per keyframe, the names of the characters its shot shows.
        clip_t: per keyframe prompt alignment (:func:`prompt_alignment`).
        image_global: per keyframe global image embedding of the consistency model [T, D].
        style: per keyframe style descriptor [T, E].
        portraits: character name -> global embedding of its portrait [D] (same model).
    """
    portraits = portraits or {}
    characters: dict[str, dict] = {}
    for name in sorted({n for names in frame_characters for n in names}):
        shown = [i for i, names in enumerate(frame_characters) if name in names]
        entry = {"keyframes": len(shown), "self": mean_pairwise_similarity(image_global[shown])}
        if name in portraits:
            entry["portrait"] = float(np.mean(np.asarray(image_global[shown], np.float64) @ portraits[name]))
        characters[name] = entry
    return {
        "keyframes": len(clip_t),
        "clip_t": float(np.mean(clip_t)),
        "clip_t_min": float(np.min(clip_t)),
        "clip_t_per_keyframe": [round(float(v), 6) for v in clip_t],
        "character_consistency": _mean(c["self"] for c in characters.values()),
        "character_portrait_similarity": _mean(c.get("portrait") for c in characters.values()),
        "style_consistency": mean_pairwise_similarity(style),
        "characters": characters,
    }


def _stats(values: list[float]) -> dict:
    if not values:
        return {"mean": None, "std": None, "min": None, "max": None, "count": 0}
    array = np.asarray(values, dtype=np.float64)
    return {"mean": float(array.mean()), "std": float(array.std()), "min": float(array.min()),
            "max": float(array.max()), "count": len(values)}


def summarize(movies: Sequence[Mapping]) -> dict:
    """Dataset summary of per-movie scores: per metric its label, what it is measured over, mean/std/min/max/count.

    CLIP-T is summarised over every keyframe (so long movies weigh by their length), the other metrics over movies.
    """
    metrics = {}
    for name, (label, over) in METRICS.items():
        if name == "clip_t":
            values = [v for m in movies for v in m["clip_t_per_keyframe"]]
        else:
            values = [m[name] for m in movies if m.get(name) is not None]
        metrics[name] = {"label": label, "over": over, **_stats(values)}
    return metrics


def paired_difference(ours: Sequence[Mapping], theirs: Sequence[Mapping], metric: str) -> dict:
    """Mean of ``metric`` over the movies both sides scored (matched by id), each side's, and their difference."""
    by_id = {m["id"]: m for m in theirs}
    pairs = [(m[metric], by_id[m["id"]][metric]) for m in ours
             if m["id"] in by_id and m.get(metric) is not None and by_id[m["id"]].get(metric) is not None]
    if not pairs:
        return {"movies": 0, "ours": None, "theirs": None, "difference": None, "std_error": None}
    a = np.asarray(pairs, dtype=np.float64)
    diff = a[:, 0] - a[:, 1]
    std_error = float(diff.std(ddof=1) / math.sqrt(len(diff))) if len(diff) > 1 else None
    return {"movies": len(pairs), "ours": float(a[:, 0].mean()), "theirs": float(a[:, 1].mean()),
            "difference": float(diff.mean()), "std_error": std_error}


__all__ = ["METRICS", "mean_pairwise_similarity", "movie_scores", "paired_difference", "prompt_alignment", "summarize"]
