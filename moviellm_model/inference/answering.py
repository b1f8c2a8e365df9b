"""Answer questions about one video: the video is encoded once and its questions are decoded together.

Two cases, decided by what conditions the video's context tokens (the Q-Former text, `qformer_query`):

- The same text for every question (policy "moviellm": MovieLLM's fixed pair of generic questions, what its published
  protocol used): the visual tokens and the whole prompt up to where the questions differ are the same for every
  question. That shared prefix (for a movie: system prompt, 14,400 visual tokens, subtitles) is prefilled ONCE; its KV
  cache is copied to a batch and only the question suffixes are prefilled and decoded together. The suffixes differ
  in length: each row is `prefix | padding | suffix`, the padding masked out and the positions counted from the
  mask (transformers' `generate` derives them from the attention mask), so every row sees exactly the positions and
  keys of its own one-question prompt.
- One text per question (policy "question": the bare question, as LLaMA-VID's own scripts do): the visual tokens
  differ per question, so the prompts share nothing the language model could reuse. The video's features are read
  and kept once; the context tokens are computed per question from them, and the questions are prefilled as one
  left-padded batch and decoded together.

Greedy answers (float32) equal the answers of one question at a time through the processor and `generate` token for
token (tests/model/test_inference.py).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformers import DynamicCache, GenerationMixin, StaticCache

from ..input_format import movie_inputs, movie_qformer_text, render_vicuna_v1
from ..shared_prefix import SharedPrefixCache, shared_prefix_attention
from .settings import GenerationSettings

__all__ = [
    "CACHE_IMPLEMENTATIONS",
    "EncodedVideo",
    "answer_questions",
    "encode_frames",
    "encode_features",
    "prompt_name",
    "question_prompt",
]

#: How the decoding cache of a batch that shares a prefix is held: "shared" (the prefix once for every row, each row's
#: own tokens in a preallocated buffer, see `moviellm_model.shared_prefix`: every decoding step reads the prefix once),
#: "static" (the prefix copied into every row of a preallocated cache), "dynamic" (copied, grown by concatenation;
#: transformers' default) or "auto" (shared). With the preallocated ones a CUDA model's `generate` compiles the
#: decoding step, and `config.cuda_graph_decoding` replays one CUDA graph per cache.
CACHE_IMPLEMENTATIONS = ("auto", "shared", "static", "dynamic")
#: Static caches are allocated in multiples of this many tokens (a new length recompiles the decoding step).
_STATIC_CACHE_STEP = 256


@dataclass
class EncodedVideo:
    """A video read once: its EVA features on the model's device, ready for any number of questions.

    Attributes:
        features: long videos: patch features [T, P, C] (class token dropped, what `video_features` takes); short
            videos: [F, 1 + P, C] with the class token (the Q-Former of the pixel path reads it).
        long: whether the video is a long video (movie prompt, one placeholder per frame, subtitles in between).
        inputs: long videos: the per-frame `<image>` + subtitle string of the original `.pkl` (None: no subtitles).
    """

    features: torch.Tensor
    long: bool
    inputs: str | None = None

    @property
    def num_frames(self) -> int:
        return int(self.features.shape[0])


def _model_place(model) -> tuple[torch.device, torch.dtype]:
    weight = model.model.vision_model.embeddings.patch_embedding.weight
    return weight.device, weight.dtype


@torch.inference_mode()
def encode_frames(model, processor, frames: Iterable[np.ndarray], long: bool, inputs: str | None = None) -> EncodedVideo:
    """Run the vision tower over `frames` (uint8 [H, W, 3] arrays, e.g. from `iter_video_frames`), chunk by chunk.

    Frames are preprocessed and encoded `config.visual_chunk_size` at a time, so a long movie is never held at full
    resolution. Short videos keep the class token (the pixel path), long videos drop it (the feature path).
    """
    device, dtype = _model_place(model)
    chunk = max(1, int(model.config.visual_chunk_size))
    parts: list[torch.Tensor] = []
    batch: list[np.ndarray] = []

    def flush() -> None:
        pixels = torch.from_numpy(processor.image_processor(batch, do_pad_to_square=False)["pixel_values"])
        parts.append(model.model.get_vision_features(pixels.to(device=device, dtype=dtype)))
        batch.clear()

    for frame in frames:
        batch.append(frame)
        if len(batch) == chunk:
            flush()
    if batch:
        flush()
    if not parts:
        raise ValueError("the video has no frames.")
    features = torch.cat(parts)  # [F, 1 + P, C]
    if long:
        features = features[:, 1:]
    return _checked(EncodedVideo(features=features, long=long, inputs=inputs))


def encode_features(model, feats, inputs: str | None = None, has_class_token: bool = True) -> EncodedVideo:
    """A long video from pre-extracted EVA features: `feats` [T, 1 + P, C] as `moviellm export llamavid` writes them
    (class token first, dropped here like the original does with `feats[:, 1:]`), or [T, P, C] with
    `has_class_token=False`. `inputs` is the per-frame `<image>` + subtitle string stored with them."""
    device, dtype = _model_place(model)
    tensor = torch.as_tensor(np.asarray(feats) if not isinstance(feats, torch.Tensor) else feats)
    if tensor.ndim != 3:
        raise ValueError(f"video features must be [frames, tokens, width], got shape {tuple(tensor.shape)}.")
    if has_class_token:
        tensor = tensor[:, 1:]
    return _checked(EncodedVideo(features=tensor.to(device=device, dtype=dtype), long=True, inputs=inputs or None))


def _checked(video: EncodedVideo) -> EncodedVideo:
    if video.long and video.inputs is not None:
        count = video.inputs.count("<image>")
        if count != video.num_frames:
            raise ValueError(f"the movie's subtitle string has {count} frame placeholders for {video.num_frames} "
                             "frames of features; they must come from the same export.")
    return video


# -------------------------------------------------------------------------------------------------------- prompts


def question_prompt(processor, video: EncodedVideo, question: str) -> str:
    """The vicuna_v1 prompt of one question: the movie prompt for long videos (spec 5.1-5.2), `<image>\\n` + question
    for short videos (spec 6.1)."""
    if video.long:
        inputs = video.inputs if video.inputs is not None else movie_inputs([""] * video.num_frames)
        return processor.build_movie_prompt(question, inputs=inputs)
    return render_vicuna_v1([{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}])


def prompt_name(video_is_long: bool) -> str:
    """How the prompt was built, as recorded in predictions."""
    return "vicuna_v1+movie_wrapper" if video_is_long else "vicuna_v1+video"


def _placeholder_groups(processor, video: EncodedVideo) -> list[list[int]]:
    """The placeholder ids the processor expands each `<image>` of the prompt into (one per visual token)."""
    token = processor.video_token_id
    if video.long:  # one placeholder per frame in the prompt
        per_frame = processor.tokens_per_frame(int(video.features.shape[1]), has_class_token=False)
        return [[token] * per_frame] * video.num_frames
    return [[token] * (processor.tokens_per_frame() * video.num_frames)]  # one placeholder for the whole video


def _visual_tokens(model, video: EncodedVideo, qformer_ids: torch.Tensor, qformer_mask: torch.Tensor) -> torch.Tensor:
    """The video's visual tokens [N, C] conditioned on one Q-Former text ([1, L] ids and mask)."""
    if video.long:
        return model.model.get_long_video_features(video.features, [video.num_frames], qformer_ids, qformer_mask)
    # Short video from kept features (class token included): the token generator of the pixel path, chunk by chunk.
    generator = model.model.token_generator
    chunk = max(1, int(model.config.visual_chunk_size))
    parts = []
    for start in range(0, video.num_frames, chunk):
        rows = video.features[start : start + chunk]
        count = rows.shape[0]
        parts.append(generator(rows, qformer_ids.expand(count, -1), qformer_mask.expand(count, -1),
                               has_class_token=True))
    return torch.cat(parts).flatten(0, 1)


def _embed(model, ids: torch.Tensor, tokens: Sequence[torch.Tensor]) -> torch.Tensor:
    """Input embeddings of `ids` [B, L] with the rows' visual tokens (in row order) at their placeholder positions."""
    placeholders = ids == model.config.video_token_index
    embeds = model.get_input_embeddings()(ids.masked_fill(placeholders, 0))
    if tokens:
        values = torch.cat([t.to(embeds.dtype) for t in tokens])
        if int(placeholders.sum()) != values.shape[0]:
            raise ValueError(f"{int(placeholders.sum())} placeholders for {values.shape[0]} visual tokens.")
        embeds = embeds.masked_scatter(placeholders.unsqueeze(-1).expand_as(embeds), values)
    return embeds


def _common_prefix(rows: Sequence[Sequence[int]]) -> int:
    first = rows[0]
    length = min(len(row) for row in rows)
    for index in range(length):
        token = first[index]
        if any(row[index] != token for row in rows):
            return index
    return length


# ---------------------------------------------------------------------------------------------------------- caches


def _cache_kwarg() -> str:
    """The name under which `generate` takes a cache ("cache" in recent transformers, "past_key_values" before)."""
    parameters = inspect.signature(GenerationMixin.prepare_inputs_for_generation).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def _output_cache(output):
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def _layer_states(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    return [(keys, values) for keys, values in cache]


def _batch_cache(model, prefix_states, rows: int, implementation: str, max_length: int):
    """A new cache holding the one-row prefix in each of `rows` rows (the prefix itself is left untouched)."""
    if implementation == "static":
        cache = StaticCache(config=model.config, max_cache_len=max_length)
    else:
        cache = DynamicCache(config=model.config)
    if len(cache.layers) != len(prefix_states):
        raise RuntimeError(f"the cache has {len(cache.layers)} layers for {len(prefix_states)} prefix layers.")
    for layer, (keys, values) in zip(cache.layers, prefix_states):
        # expand is a view; the layer's first update copies it once per row
        layer.update(keys.expand(rows, -1, -1, -1), values.expand(rows, -1, -1, -1))
    return cache


def _rounded(length: int) -> int:
    return -(-length // _STATIC_CACHE_STEP) * _STATIC_CACHE_STEP


def _resolve_cache(implementation: str) -> str:
    if implementation not in CACHE_IMPLEMENTATIONS:
        raise ValueError(f"cache implementation must be one of {', '.join(CACHE_IMPLEMENTATIONS)}, "
                         f"not {implementation!r}.")
    return "shared" if implementation == "auto" else implementation


# ---------------------------------------------------------------------------------------------------------- answer


def _generate(model, processor, settings: GenerationSettings, streamer=None, **inputs) -> torch.Tensor:
    tokenizer = processor.tokenizer
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    if settings.do_sample:
        torch.manual_seed(settings.seed)
    return model.generate(**inputs, **settings.generate_kwargs(), pad_token_id=pad,
                          eos_token_id=tokenizer.eos_token_id, streamer=streamer)


def _decode(processor, sequences: torch.Tensor, start: int) -> list[str]:
    return [text.strip() for text in processor.tokenizer.batch_decode(sequences[:, start:], skip_special_tokens=True)]


@torch.inference_mode()
def answer_questions(
    model,
    processor,
    video: EncodedVideo,
    questions: Sequence[str],
    settings: GenerationSettings | None = None,
    qformer_query: str = "question",
    batch_size: int = 8,
    cache_implementation: str = "auto",
    prefix_kernel: str = "auto",
    streamer=None,
    on_batch: Callable[[int, list[str]], None] | None = None,
) -> list[str]:
    """Answers to `questions` about `video`, in order.

    Args:
        model, processor: `LlamaVidForConditionalGeneration` (eval mode) and its `LlamaVidProcessor`.
        video: from `encode_frames` / `encode_features`.
        questions: the questions, asked independently (one conversation each).
        settings: decoding settings (default: greedy, up to 1024 new tokens).
        qformer_query: what conditions the context tokens: "question" or "moviellm" (see `QFORMER_QUERIES`).
        batch_size: questions decoded together at most.
        cache_implementation: one of `CACHE_IMPLEMENTATIONS`, for the batches that share a prefilled prefix.
        prefix_kernel: with the "shared" cache, how attention over the prefix is computed (one of
            `moviellm_model.shared_prefix.PREFIX_KERNELS`; the same result up to rounding).
        streamer: a transformers streamer (e.g. `TextStreamer`), for a single question.
        on_batch: called as `on_batch(start, answers)` after each decoded batch (questions `start`, `start + 1`, ...),
            e.g. to save answers before the next batch runs.
    """
    settings = settings or GenerationSettings()
    questions = list(questions)
    if not questions:
        return []
    if streamer is not None and len(questions) > 1:
        raise ValueError("a streamer prints one answer: ask one question at a time with it.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}.")
    groups = _placeholder_groups(processor, video)
    rows = [processor.tokenize_with_placeholders(question_prompt(processor, video, q), groups) for q in questions]
    texts = [movie_qformer_text(q, qformer_query) for q in questions]
    distinct = list(dict.fromkeys(texts))
    device = model.device
    encoded = processor.encode_qformer_text(distinct, return_tensors="pt")
    qformer_ids, qformer_mask = encoded["qformer_input_ids"].to(device), encoded["qformer_attention_mask"].to(device)

    prefix = _common_prefix(rows) if len(distinct) == 1 else 0
    prefix = min(prefix, min(len(r) for r in rows) - 1)  # every row keeps at least one token to prefill
    video_token = model.config.video_token_index
    if prefix > 0 and not any(video_token in row[prefix:] for row in rows):
        tokens = _visual_tokens(model, video, qformer_ids[:1], qformer_mask[:1])
        return _answer_from_shared_prefix(model, processor, rows, prefix, tokens, settings, batch_size,
                                          _resolve_cache(cache_implementation), prefix_kernel, streamer, on_batch)
    return _answer_per_question(model, processor, video, rows, texts, distinct, qformer_ids, qformer_mask, settings,
                                batch_size, streamer, on_batch)


def _answer_from_shared_prefix(model, processor, rows, prefix: int, tokens, settings, batch_size, implementation,
                               prefix_kernel, streamer, on_batch) -> list[str]:
    device = model.device
    prefix_ids = torch.tensor([rows[0][:prefix]], device=device)
    output = model(inputs_embeds=_embed(model, prefix_ids, [tokens]), use_cache=True, logits_to_keep=1)
    prefix_states = _layer_states(_output_cache(output))
    del output
    pad = processor.tokenizer.pad_token_id if processor.tokenizer.pad_token_id is not None else 0
    # `generate` never embeds the prefix (it is in the cache): its placeholder ids, which have no embedding row,
    # become padding ids there, so no logits processor ever indexes with them.
    kept_prefix = [pad if token == model.config.video_token_index else token for token in rows[0][:prefix]]
    answers: list[str] = []
    for start in range(0, len(rows), batch_size):
        suffixes = [row[prefix:] for row in rows[start : start + batch_size]]
        width = max(len(s) for s in suffixes)
        ids = torch.tensor([kept_prefix + [pad] * (width - len(s)) + s for s in suffixes], device=device)
        mask = torch.tensor([[1] * prefix + [0] * (width - len(s)) + [1] * len(s) for s in suffixes], device=device)
        # preallocated lengths are rounded up, so that movies of similar length reuse one compiled decoding step
        rows_in_cache = len(suffixes) * settings.num_beams
        if implementation == "shared":
            tail = SharedPrefixCache.tail_length_for(prefix, width + settings.max_new_tokens, _STATIC_CACHE_STEP)
            cache = SharedPrefixCache(prefix_states, rows_in_cache, tail, align=_STATIC_CACHE_STEP)
            attention = shared_prefix_attention(model, kernel=prefix_kernel)
        else:
            cache = _batch_cache(model, prefix_states, rows_in_cache, implementation,
                                 max_length=_rounded(prefix + width + settings.max_new_tokens))
            attention = contextlib.nullcontext()
        with attention:
            sequences = _generate(model, processor, settings, streamer, input_ids=ids, attention_mask=mask,
                                  **{_cache_kwarg(): cache})
        batch_answers = _decode(processor, sequences, ids.shape[1])
        del cache, sequences
        answers += batch_answers
        if on_batch is not None:
            on_batch(start, batch_answers)
    return answers


def _answer_per_question(model, processor, video, rows, texts, distinct, qformer_ids, qformer_mask, settings,
                         batch_size, streamer, on_batch) -> list[str]:
    device = model.device
    pad = processor.tokenizer.pad_token_id if processor.tokenizer.pad_token_id is not None else 0
    video_token = model.config.video_token_index
    tokens_of: dict[str, torch.Tensor] = {}
    answers: list[str] = []
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        batch_texts = texts[start : start + batch_size]
        for text in batch_texts:
            if text not in tokens_of:
                index = distinct.index(text)
                tokens_of[text] = _visual_tokens(model, video, qformer_ids[index : index + 1],
                                                 qformer_mask[index : index + 1])
        width = max(len(r) for r in batch)
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in batch], device=device)  # left padding
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in batch], device=device)
        embeds = _embed(model, ids, [tokens_of[text] for text in batch_texts])
        # input_ids only count the prompt for `generate`; the embeddings carry it
        sequences = _generate(model, processor, settings, streamer, input_ids=ids.masked_fill(ids == video_token, pad),
                              inputs_embeds=embeds, attention_mask=mask)
        batch_answers = _decode(processor, sequences, ids.shape[1])
        answers += batch_answers
        if on_batch is not None:
            on_batch(start, batch_answers)
        # keep only the tokens the remaining batches still need
        later = set(texts[start + batch_size :])
        tokens_of = {text: value for text, value in tokens_of.items() if text in later}
    return answers
