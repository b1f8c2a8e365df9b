"""Records -> token ids, labels and visual tensors, with the over-length policy.

Label masking follows LLaMA-VID's `preprocess_v1` / `preprocess_imgsp_v1` (llamavid-spec.md 3.4): the conversation
is rendered with the `vicuna_v1` template and the loss covers each assistant answer and its closing `</s>`; the
system prompt, the user turns and every placeholder are ignored (-100). Unlike the original, each answer span is
located in token space from the processor's own tokenisation of the whole conversation (the same as at inference)
and its character offsets: the loss starts at the first token that ends after "ASSISTANT:" and stops after the
closing `</s>`. Nothing is inferred from token counts of separately tokenised pieces, which is where the original
loses whole samples to a "tokenization mismatch" (and masks them silently) when a tokenizer's `legacy` behaviour
differs; a sample whose spans cannot be located is skipped and counted, never trained on with masked-out labels.

Over-length policy (a sample longer than `max_length` tokens after placeholder expansion), in this order:

1. keep every QA turn and subsample the movie's frames uniformly (first frame kept, evenly spaced) to fit, keeping
   at least `min_frames` frames (or all of them when the movie has fewer); the subtitles of dropped frames move to
   the previous kept frame, so no dialogue is lost;
2. if even `min_frames` do not fit, drop whole trailing QA turns (never part of an answer) and retry 1;
3. if one turn does not fit either, skip the sample.

Every adjusted or skipped sample is counted (`DataStats`) and reported in the training logs and summary. A corrupt
sample (unreadable tar member, missing or mismatched features file, undecodable video) is skipped and counted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..input_format import movie_inputs, movie_qformer_text, render_vicuna_v1
from .records import Record

__all__ = ["ConversationEncoder", "EncodedSample", "SampleSkipped", "render_with_answer_spans"]

IGNORE_INDEX = -100


class SampleSkipped(Exception):
    """A sample that is not trained on; `reason` is the counter it goes to ("corrupt", "too_long", ...)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass
class EncodedSample:
    """One tokenised conversation with its visual input (what the collator batches)."""

    id: str
    source: str
    input_ids: list[int]
    labels: list[int]
    visual_kind: str | None = None  # "features" ([T, P, C] EVA patch features) or "frames" ([T, 3, H, W] pixels)
    visual: torch.Tensor | None = None
    qformer_text: str | tuple[str, str] | None = None
    adjustments: list[str] = field(default_factory=list)  # "frames_subsampled", "turns_dropped"


def render_with_answer_spans(first_user: str, turns: Sequence[tuple[str, str]]) -> tuple[str, list[tuple[int, int]]]:
    """The `vicuna_v1` rendering of a conversation and the character span of each answer's loss.

    A span starts right after "ASSISTANT:" (the space and the answer follow) and ends after the closing "</s>".
    """
    messages = []
    for index, (user, answer) in enumerate(turns):
        messages += [{"role": "user", "content": first_user if index == 0 else user},
                     {"role": "assistant", "content": answer}]
    text = render_vicuna_v1(messages, add_generation_prompt=False)
    spans, position = [], 0
    for index, (_, answer) in enumerate(turns):
        marker = text.index("ASSISTANT:", position) + len("ASSISTANT:")
        end = marker + len(" " + answer + "</s>")
        if text[marker:end] != " " + answer + "</s>":  # the template changed under us: never mask blindly
            raise SampleSkipped("tokenization_mismatch", f"answer {index} is not where the template puts it")
        spans.append((marker, end))
        position = end
    return text, spans


def subsample_frames(num_frames: int, keep: int) -> list[int]:
    """`keep` evenly spaced frame indices of `num_frames`, the first frame included."""
    if keep >= num_frames:
        return list(range(num_frames))
    return sorted({int(round(x)) for x in np.linspace(0, num_frames - 1, keep)})


def merge_subtitles(subtitles: Sequence[str], kept: Sequence[int]) -> list[str]:
    """Subtitles of the kept frames, each followed by those of the dropped frames up to the next kept frame."""
    merged = []
    for index, start in enumerate(kept):
        stop = kept[index + 1] if index + 1 < len(kept) else len(subtitles)
        merged.append(" ".join(text for text in subtitles[start:stop] if text))
    return merged


class ConversationEncoder:
    """Tokenises records with a LlamaVidProcessor and loads their visual input.

    Args:
        processor: the checkpoint's `LlamaVidProcessor` (tokenizer, Q-Former tokenizer, image processor).
        max_length: the longest sample in tokens, visual tokens included (e.g. 65,536 for stage 3).
        qformer_query: what conditions the movie's context tokens (`input_format.QFORMER_QUERIES`).
        min_frames: the fewest frames the over-length policy keeps of a movie.
    """

    def __init__(self, processor, max_length: int, qformer_query: str = "question", min_frames: int = 16):
        self.processor = processor
        self.max_length = int(max_length)
        self.qformer_query = qformer_query
        self.min_frames = max(1, int(min_frames))
        movie_qformer_text("", qformer_query)  # validates the policy name
        self.tokens_per_frame = processor.tokens_per_frame(has_class_token=False)
        self.video_token_id = processor.video_token_id

    # -- text ---------------------------------------------------------------------------------------------------

    @staticmethod
    def _first_user(record: Record, subtitles: Sequence[str] | None) -> str:
        """The first user turn: the record's text, or its movie with the given (possibly merged) subtitles."""
        movie = record.movie
        if movie is None:
            return record.turns[0][0]
        return movie.prefix + movie_inputs(subtitles) + movie.suffix

    def _tokenize(self, record: Record, turns, subtitles) -> tuple[list[int], list[int], list[int]]:
        """ids, labels, and the token index where each turn ends (its "</s>" included)."""
        text, spans = render_with_answer_spans(self._first_user(record, subtitles), turns)
        frames = 0 if subtitles is None else len(subtitles)
        groups = [[self.video_token_id] * self.tokens_per_frame] * frames
        try:
            ids, edges = self.processor.tokenize_with_placeholders(text, groups, [edge for span in spans for edge in span])
        except ValueError as err:
            raise SampleSkipped("tokenization_mismatch", f"sample {record.id}: {err}") from None
        labels = [IGNORE_INDEX] * len(ids)
        for start, end in zip(edges[::2], edges[1::2]):
            labels[start:end] = ids[start:end]
        return ids, labels, edges[1::2]

    # -- policy -------------------------------------------------------------------------------------------------

    def encode(self, record: Record) -> EncodedSample:
        """Tokens, labels and visual input of `record`; raises `SampleSkipped` for what is not trained on."""
        if record.error is not None:
            raise SampleSkipped("corrupt", record.error)
        if not record.turns or any(not answer.strip() for _, answer in record.turns):
            raise SampleSkipped("corrupt", f"sample {record.id} has an empty answer")
        movie = record.movie
        subtitles = None if movie is None else list(movie.subtitles)
        ids, labels, turn_ends = self._tokenize(record, record.turns, subtitles)
        adjustments: list[str] = []
        kept = None if movie is None else list(range(len(subtitles)))
        if len(ids) > self.max_length:
            turns, kept = self._fit(record, subtitles, turn_ends)
            if len(turns) < len(record.turns):
                adjustments.append("turns_dropped")
            if kept is not None and len(kept) < len(subtitles):
                adjustments.append("frames_subsampled")
            for _ in range(3):  # merged subtitles can tokenise a few tokens longer: shrink until it fits
                shown = None if kept is None else merge_subtitles(subtitles, kept)
                ids, labels, _ = self._tokenize(record, turns, shown)
                excess = len(ids) - self.max_length
                if excess <= 0:
                    break
                if kept is None or len(kept) <= min(self.min_frames, len(subtitles)):
                    raise SampleSkipped("too_long", f"sample {record.id} does not fit in {self.max_length} tokens")
                kept = subsample_frames(len(subtitles), len(kept) - math.ceil(excess / self.tokens_per_frame))
            else:
                raise SampleSkipped("too_long", f"sample {record.id} does not fit in {self.max_length} tokens")
        sample = EncodedSample(id=record.id, source=record.source, input_ids=ids, labels=labels, adjustments=adjustments)
        if movie is not None:
            sample.visual_kind = movie.visual.kind
            sample.visual = self._load_visual(record, kept)
            sample.qformer_text = movie_qformer_text(record.question, self.qformer_query)
        return sample

    def _fit(self, record: Record, subtitles, turn_ends) -> tuple[list[tuple[str, str]], list[int] | None]:
        """The turns and frames to keep (policy steps 1-2), from the full sample's per-turn token counts."""
        frames = 0 if subtitles is None else len(subtitles)
        visual_tokens = frames * self.tokens_per_frame
        for count in range(len(record.turns), 0, -1):
            text_tokens = turn_ends[count - 1] - visual_tokens  # tokens of the first `count` turns without the movie
            if subtitles is None:
                if text_tokens <= self.max_length:
                    return record.turns[:count], None
                continue
            room = (self.max_length - text_tokens) // self.tokens_per_frame
            if room >= min(self.min_frames, frames):
                return record.turns[:count], subsample_frames(frames, room)
        raise SampleSkipped("too_long", f"sample {record.id}: even its first turn with {min(self.min_frames, frames)} "
                                        f"frames is longer than {self.max_length} tokens")

    # -- visual input -------------------------------------------------------------------------------------------

    def _load_visual(self, record: Record, kept: list[int]) -> torch.Tensor:
        visual = record.movie.visual
        expected = len(record.movie.subtitles)
        try:
            if visual.kind == "features":
                return self._load_features(visual, kept, expected)
            return self._load_frames(visual, kept, expected)
        except SampleSkipped:
            raise
        except Exception as err:  # noqa: BLE001 - any unreadable input is a corrupt sample, skipped and counted
            raise SampleSkipped("corrupt", f"sample {record.id}: cannot read its {visual.kind} ({err})") from None

    @staticmethod
    def _check_count(found: int, expected: int, what: str) -> None:
        if found != expected:
            raise SampleSkipped("corrupt", f"{what} has {found} frames but the conversation shows {expected}")

    def _load_features(self, visual, kept: list[int], expected: int) -> torch.Tensor:
        """EVA patch features of the kept frames, class token dropped: [len(kept), P, C]."""
        path = visual.path or ""
        if path.endswith(".pkl"):
            from .records import load_legacy_pickle

            feats, _ = load_legacy_pickle(path)
            self._check_count(len(feats), expected, path)
            return torch.from_numpy(np.ascontiguousarray(feats[kept, 1:]))
        from safetensors import safe_open

        with safe_open(path, framework="pt") as handle:
            rows = handle.get_slice("feats")
            self._check_count(rows.get_shape()[0], expected, path)
            runs, start = [], 0
            for index in range(1, len(kept) + 1):  # read contiguous runs of kept frames, class token skipped
                if index == len(kept) or kept[index] != kept[index - 1] + 1:
                    runs.append(rows[kept[start] : kept[index - 1] + 1, 1:])
                    start = index
        return torch.cat(runs) if len(runs) > 1 else runs[0]

    def _load_frames(self, visual, kept: list[int], expected: int) -> torch.Tensor:
        """Pixel values of the kept frames of the movie's mp4 (1 frame per second): [len(kept), 3, H, W]."""
        from moviellm_data.video import decode_mp4

        frames = decode_mp4(visual.read_bytes(), source=visual.path or "mp4")
        self._check_count(len(frames), expected, visual.path or "the mp4")
        pixels = self.processor.image_processor([frames[i] for i in kept], do_pad_to_square=False)["pixel_values"]
        return torch.as_tensor(np.asarray(pixels))
