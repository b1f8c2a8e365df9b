"""Inference with LLaMA-VID: load a checkpoint, answer many questions about a video with its visual prefix shared.

```python
from moviellm_model.inference import GenerationSettings, answer_questions, encode_features, load_model

loaded = load_model("path/to/llamavid-long-video")                  # or a Hub id, revision=...
movie = encode_features(loaded.model, feats, inputs=subtitles)      # feats [T, 257, 1408] from `moviellm export`
answers = answer_questions(loaded.model, loaded.processor, movie, questions, qformer_query="moviellm")
```

`moviellm answer` (whole benchmarks, resumable predictions: `open_benchmark`, `answer_benchmark`) and `moviellm chat`
(one streamed answer) use these. The names are imported on first use, so that the plain-Python parts (`settings`,
`benchmarks`, `predictions`) work without torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "CACHE_IMPLEMENTATIONS": "answering",
    "EncodedVideo": "answering",
    "answer_questions": "answering",
    "encode_features": "answering",
    "encode_frames": "answering",
    "prompt_name": "answering",
    "question_prompt": "answering",
    "DTYPES": "loading",
    "LoadedModel": "loading",
    "load_model": "loading",
    "PRESETS": "settings",
    "GenerationSettings": "settings",
    "resolve_qformer_query": "settings",
    "Benchmark": "benchmarks",
    "BenchmarkQuestion": "benchmarks",
    "BenchmarkVideo": "benchmarks",
    "open_benchmark": "benchmarks",
    "PredictionsFile": "predictions",
    "AnswerResult": "runner",
    "answer_benchmark": "runner",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
