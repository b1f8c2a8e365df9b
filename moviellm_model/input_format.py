"""LLaMA-VID's input format, in one place: placeholders, the conversation template, the movie prompt.

Everything that decides which text (and which placeholders) the model reads lives here, in plain Python
without torch or transformers, so that the processor, the trainer's collator, the evaluation's answer
writer and the data side's exports (``moviellm_data.export``) all build exactly the same prompts.
Sources: llamavid-spec.md sections 1.8-1.9 (placeholders), 3.1 (``vicuna_v1``), 5.1-5.2 (the movie prompt
and the fixed Q-Former prompt of MovieLLM's answer script).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from importlib import resources
from typing import Any

__all__ = [
    "IMAGE_TOKEN",
    "LONG_VIDEO_TOKENS_PER_FRAME",
    "MOVIE_GENERATION_KWARGS",
    "MOVIE_PROMPT_END",
    "MOVIE_PROMPT_START",
    "MOVIELLM_QFORMER_QUESTIONS",
    "QFORMER_QUERIES",
    "VICUNA_V1_SYSTEM",
    "VIDEO_QA_GENERATION_KWARGS",
    "VIDEO_TOKEN",
    "VISUAL_INPUT_NAMES",
    "default_chat_template",
    "expand_placeholders",
    "movie_inputs",
    "movie_message",
    "movie_qformer_text",
    "render_vicuna_v1",
]

#: Placeholder of an image (or of a video frame in long-video prompts) in prompt text.
IMAGE_TOKEN = "<image>"
#: Placeholder of a video in prompt text (LLaMA-VID's original prompts use `<image>` for videos too).
VIDEO_TOKEN = "<video>"
#: `video_token` of the original long-video recipe: LLM tokens per movie frame (one context, one content token).
LONG_VIDEO_TOKENS_PER_FRAME = 2

#: The model's visual inputs (what the processor returns besides the text): only the first (prefill) forward of
#: `generate` needs them.
VISUAL_INPUT_NAMES = (
    "pixel_values",
    "pixel_values_videos",
    "video_num_frames",
    "video_features",
    "video_features_num_frames",
    "pixel_values_long_videos",
    "qformer_input_ids",
    "qformer_attention_mask",
)

VICUNA_V1_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
#: Wrapper of `run_llamavid_movie.py` and MovieLLM's `run_llamavid_movie_answer.py` (no separators around the movie).
MOVIE_PROMPT_START = "Below is a movie. Memorize the content and answer my question after watching this movie."
MOVIE_PROMPT_END = "Now the movie end."
#: Decoding settings of `run_llamavid_movie.py` and MovieLLM's answer script (stop at `</s>`, the EOS token).
MOVIE_GENERATION_KWARGS = {"do_sample": True, "temperature": 0.6, "top_p": 0.9, "max_new_tokens": 1024}
#: Decoding settings of LLaMA-VID's short-video answer scripts (`model_msvd_qa.py` and the others of spec 6.1): top_p is
#: not set there, so the checkpoint's generation config decides it.
VIDEO_QA_GENERATION_KWARGS = {"do_sample": True, "temperature": 0.2, "max_new_tokens": 1024}
#: The fixed Q-Former prompt of MovieLLM's answer script (its `--question` default, encoded as a BERT sentence pair).
MOVIELLM_QFORMER_QUESTIONS = (
    "Can you provide a brief overview of the movie in just a few sentences?",
    "Can you outline the chronological sequence of events in the movie?",
)
#: What a movie's context tokens are conditioned on (the Q-Former text), for training and inference alike:
#: "question" = the bare question (the wrapper and the subtitles go to the language model only);
#: "moviellm" = MovieLLM's fixed pair of generic questions, the same for every question of a movie (what its
#: published numbers used; it also lets all questions about a movie share one encoded, prefilled movie).
QFORMER_QUERIES = ("question", "moviellm")


def default_chat_template() -> str:
    """The `vicuna_v1` chat template shipped with this package (equal to :func:`render_vicuna_v1`)."""
    return resources.files(__package__).joinpath("chat_templates/vicuna_v1.jinja").read_text(encoding="utf-8")


def render_vicuna_v1(messages: Sequence[dict[str, Any]], add_generation_prompt: bool = True) -> str:
    """Python rendering of the `vicuna_v1` conversation (`SeparatorStyle.TWO`), equal to the chat template.

    Messages are `{"role": "system" | "user" | "assistant", "content": str | list[dict]}`; image and video items of a
    content list render as `"<image>\\n"`. User turns end with " ", assistant turns with "</s>".
    """
    messages = list(messages)
    system = VICUNA_V1_SYSTEM
    if messages and messages[0]["role"] == "system":
        content = messages[0]["content"]
        system = content if isinstance(content, str) else "".join(i["text"] for i in content if i["type"] == "text")
        messages = messages[1:]
    out = system + " "
    for index, message in enumerate(messages):
        role = "USER" if message["role"] == "user" else "ASSISTANT"
        content = message["content"]
        if not isinstance(content, str):
            content = "".join(
                IMAGE_TOKEN + "\n" if item["type"] in ("image", "video") else item.get("text", "") for item in content
            )
        out += f"{role}: {content}" + (" " if index % 2 == 0 else "</s>") if content else f"{role}:"
    if add_generation_prompt:
        out += "ASSISTANT:"
    return out


def movie_inputs(subtitles: Iterable[str | None]) -> str:
    """The `inputs` string of an original `.pkl`: per frame, `<image>` then the subtitle shown on it (may be empty)."""
    return "".join(IMAGE_TOKEN + (text or "") for text in subtitles)


def expand_placeholders(inputs: str, tokens_per_frame: int = LONG_VIDEO_TOKENS_PER_FRAME) -> str:
    """What the original trainer feeds the tokenizer: every `<image>` repeated `tokens_per_frame` times."""
    return inputs.replace(IMAGE_TOKEN, IMAGE_TOKEN * tokens_per_frame)


def movie_message(movie: str, question: str, wrapper: bool = True) -> str:
    """The user message about a movie: the movie (placeholders and subtitles), then the question on its own line.

    With `wrapper` (the default), the movie is framed by the original inference scripts' sentences
    ("Below is a movie. ..." / "Now the movie end.", no separators), so training and evaluation see the same words.
    """
    if wrapper:
        return f"{MOVIE_PROMPT_START}{movie}{MOVIE_PROMPT_END}\n{question}"
    return f"{movie}\n{question}"


def movie_qformer_text(question: str, query: str = "question") -> str | tuple[str, str]:
    """The Q-Former text that conditions a movie's context tokens (see :data:`QFORMER_QUERIES`).

    Never the wrapper or the subtitles: the original trainer read its `.pkl` samples' whole human turn as the query,
    while inference queries with the question; here training and inference use this one function.
    """
    if query == "question":
        return question.strip()
    if query == "moviellm":
        return MOVIELLM_QFORMER_QUESTIONS
    raise ValueError(f"qformer_query must be one of {', '.join(QFORMER_QUERIES)}, not {query!r}.")
