"""Generation settings and the Q-Former query policy of `moviellm answer` / `moviellm chat` (plain Python, no torch).

Greedy decoding is the default, so that answers are reproducible; `preset="original"` gives the settings of the
original scripts (llamavid-spec.md 5.1-5.2 for movies, 6.1 for short videos), kept in `moviellm_model.input_format`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from ..input_format import MOVIE_GENERATION_KWARGS, QFORMER_QUERIES, VIDEO_QA_GENERATION_KWARGS

__all__ = ["PRESETS", "GenerationSettings", "resolve_qformer_query"]

#: `--settings` values: "greedy" (reproducible) or "original" (the originals' sampling settings).
PRESETS = ("greedy", "original")
#: What the original scripts allow at most (their `max_new_tokens`).
DEFAULT_MAX_NEW_TOKENS = 1024


@dataclass(frozen=True)
class GenerationSettings:
    """How answers are decoded; recorded in every prediction line.

    Args:
        max_new_tokens: tokens generated at most per answer (answers stop earlier at `</s>`, vicuna_v1's stop).
        do_sample: sample instead of greedy decoding.
        temperature, top_p: sampling parameters (unused, and recorded as None, when `do_sample` is False; `top_p`
            None when sampling means the checkpoint's generation config decides, as in the short-video scripts).
        num_beams: beam search width (1 = none; the originals use none).
        seed: seed of the sampler (each video derives its own from it, so a resumed run draws the same samples).
    """

    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    do_sample: bool = False
    temperature: float | None = None
    top_p: float | None = None
    num_beams: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, not {self.max_new_tokens}.")
        if self.num_beams < 1:
            raise ValueError(f"num_beams must be at least 1, not {self.num_beams}.")
        if self.temperature is not None and self.temperature <= 0:
            raise ValueError(f"temperature must be above 0 (use greedy decoding instead of 0), not {self.temperature}.")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], not {self.top_p}.")

    @classmethod
    def preset(cls, name: str = "greedy", long_video: bool = True, **overrides: Any) -> GenerationSettings:
        """Settings of a preset, with `overrides` (None values are ignored) on top.

        "greedy": greedy decoding, up to 1024 new tokens. "original": the original scripts' sampling, which differs
        for movies (temperature 0.6, top_p 0.9) and short videos (temperature 0.2, top_p from the checkpoint).
        """
        if name not in PRESETS:
            raise ValueError(f"settings preset must be one of {', '.join(PRESETS)}, not {name!r}.")
        values: dict[str, Any] = {}
        if name == "original":
            values.update(MOVIE_GENERATION_KWARGS if long_video else VIDEO_QA_GENERATION_KWARGS)
        given = {key: value for key, value in overrides.items() if value is not None}
        if "do_sample" not in given and ("temperature" in given or "top_p" in given):
            given["do_sample"] = True  # a temperature or top_p only means something when sampling
        values.update(given)
        return cls(**values)

    def generate_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of `model.generate`."""
        kwargs: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "do_sample": self.do_sample,
                                  "num_beams": self.num_beams}
        if self.do_sample:
            if self.temperature is not None:
                kwargs["temperature"] = self.temperature
            if self.top_p is not None:
                kwargs["top_p"] = self.top_p
        else:  # whatever the checkpoint's generation config says, greedy decoding uses none of these
            kwargs.update(temperature=None, top_p=None, top_k=None)
        return kwargs

    def record(self, qformer_query: str, prompt: str) -> dict[str, Any]:
        """The `generation` object of a prediction line."""
        values = asdict(self)
        if not self.do_sample:
            values.update(temperature=None, top_p=None)
        return {**values, "qformer_query": qformer_query, "prompt": prompt}

    def with_seed(self, seed: int) -> GenerationSettings:
        return replace(self, seed=seed)


def resolve_qformer_query(requested: str | None, config: Any, long_video: bool) -> str:
    """The Q-Former query policy to use (see `moviellm_model.input_format.QFORMER_QUERIES`).

    An explicit request wins; then the checkpoint's `config.qformer_query` (training records the policy it used);
    then "moviellm" for long videos (MovieLLM's published protocol) and "question" for short videos (LLaMA-VID's).
    """
    if requested is not None:
        if requested not in QFORMER_QUERIES:
            raise ValueError(f"qformer_query must be one of {', '.join(QFORMER_QUERIES)}, not {requested!r}.")
        return requested
    recorded = getattr(config, "qformer_query", None)
    if recorded in QFORMER_QUERIES:
        return recorded
    return "moviellm" if long_video else "question"
