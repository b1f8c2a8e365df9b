"""What rendered movies cost in quality: prompt alignment, character and style consistency (``moviellm score``).

- :mod:`.embedders`: image and text embeddings from transformers models (CLIP, SigLIP, DINOv2, ...), on the GPU;
- :mod:`.metrics`: the scores of a movie and of a dataset from those embeddings (plain numpy);
- :mod:`.run`: a dataset folder scored, resumably, into ``scores.jsonl`` and ``scores.json`` (shown in the card);
- :mod:`.compare`: two renderings of the same scripts compared movie by movie (a table and a chart).

Importing this package imports neither torch nor transformers (the models load when a movie is scored)::

    from moviellm_data.scoring import ScoreSettings, compare_datasets, score_dataset

    summary = score_dataset("movies", ScoreSettings(consistency_model="facebook/dinov2-base"))
    summary["metrics"]["clip_t"]["mean"]
    print(compare_datasets("movies-few-step", "movies-reference").table)
"""

from .compare import Comparison, compare_datasets
from .metrics import METRICS, movie_scores, summarize
from .run import DEFAULT_CLIP_MODEL, ScoreSettings, Scorer, read_movie_scores, score_dataset

__all__ = ["Comparison", "DEFAULT_CLIP_MODEL", "METRICS", "ScoreSettings", "Scorer", "compare_datasets",
           "movie_scores", "read_movie_scores", "score_dataset", "summarize"]
