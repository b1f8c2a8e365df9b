"""Processor of LLaMA-VID: Llama tokenizer, Q-Former (BERT) tokenizer, image processor, video decoding.

What it reproduces from the original (llamavid-spec.md, sections 1.3, 1.8, 1.9, 3.1, 5.2):

- `tokenizer_image_token` of LLaVA: the prompt is split on the placeholders, every text chunk is tokenised on its own
  (so each chunk after a placeholder starts with its own sentencepiece dummy-prefix space), a single BOS is kept at
  the start. Where the original puts one sentinel (-200) per placeholder and splices a variable number of visual
  tokens into it, this processor writes one placeholder id per visual token, so the model fills them in place and
  `generate`, caches and padding work like any transformers model. Collapsing each run of placeholder ids to a
  single -200 gives exactly the original ids.
- The Q-Former question: BERT ids (`[CLS] question [SEP]`, `[DEC]` in the vocabulary), truncated on the left to 256
  tokens, one question per visual input.
- Images: CLIP statistics, bicubic shortest-edge resize and center crop, optional pad-to-square (training).
- Videos: decoded with PyAV, every `round(fps / 1)`-th frame from frame 0 (1 frame per second), or frames given as
  arrays; long videos from pre-extracted EVA features, one placeholder per frame with its subtitles in between.
- The `vicuna_v1` conversation template (as a chat template) and the movie prompt of MovieLLM's answer script.
"""

from __future__ import annotations

import bisect
import io
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from transformers import AutoTokenizer
from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin
from transformers.tokenization_utils_base import AddedToken

from .configuration_llamavid import content_tokens_per_frame
from .image_processing_llamavid import LlamaVidImageProcessor
from .input_format import (  # noqa: F401 - re-exported: the processor's public names since the first release
    IMAGE_TOKEN,
    MOVIE_GENERATION_KWARGS,
    MOVIE_PROMPT_END,
    MOVIE_PROMPT_START,
    MOVIELLM_QFORMER_QUESTIONS,
    VICUNA_V1_SYSTEM,
    VIDEO_TOKEN,
    VISUAL_INPUT_NAMES,
    default_chat_template,
    movie_inputs,
    movie_message,
    render_vicuna_v1,
)

__all__ = [
    "LlamaVidProcessor",
    "MOVIE_GENERATION_KWARGS",
    "MOVIE_PROMPT_END",
    "MOVIE_PROMPT_START",
    "MOVIELLM_QFORMER_QUESTIONS",
    "VICUNA_V1_SYSTEM",
    "iter_video_frames",
    "load_video_frames",
    "render_vicuna_v1",
]

def iter_video_frames(source: Any, fps: float = 1.0) -> Iterator[np.ndarray]:
    """Frames of a video file at `fps` frames per second, one uint8 RGB array [H, W, 3] at a time.

    `source` is a path or the file's bytes; every `round(avg_fps / fps)`-th decoded frame from frame 0 is kept, like
    the original's decord loader. One frame at a time, so a 2-hour movie never sits in memory at full resolution.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        name, opened = "<video bytes>", io.BytesIO(bytes(source))
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"Video file {str(path)!r} does not exist.")
        name, opened = str(path), str(path)
    import av

    count = 0
    try:
        with av.open(opened) as container:
            if not container.streams.video:
                raise ValueError(f"{name!r} has no video stream.")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            avg_fps = float(rate) if rate else fps
            step = max(1, round(avg_fps / fps))
            for index, frame in enumerate(container.decode(stream)):
                if index % step == 0:
                    count += 1
                    yield frame.to_ndarray(format="rgb24")
    except av.FFmpegError as error:
        raise ValueError(f"Could not decode video {name!r}: {error}.") from None
    if not count:
        raise ValueError(f"Video {name!r} has no decodable frame.")


def load_video_frames(source: Any, fps: float = 1.0) -> list[np.ndarray]:
    """Frames of a video at `fps` frames per second, as uint8 RGB arrays [H, W, 3].

    `source` is a path or the file's bytes (decoded with PyAV by :func:`iter_video_frames`, every
    `round(avg_fps / fps)`-th frame from frame 0, like the original's decord loader) or frames already given: an array
    [F, H, W, 3] or a list of images/arrays, used as they are.
    """
    if isinstance(source, (str, os.PathLike, bytes, bytearray, memoryview)):
        return list(iter_video_frames(source, fps=fps))
    if hasattr(source, "ndim") and source.ndim == 4:
        return [np.asarray(frame) for frame in source]
    frames = list(source)
    if not frames:
        raise ValueError("A video needs at least one frame.")
    return frames


def _to_float_array(features: Any) -> Any:
    if hasattr(features, "detach"):
        return features
    return np.asarray(features)


class LlamaVidProcessor(ProcessorMixin):
    r"""Processor of [`LlamaVidForConditionalGeneration`].

    Args:
        image_processor ([`LlamaVidImageProcessor`]): CLIP-statistics image processor.
        tokenizer: the Llama tokenizer of the checkpoint (with `<image>`/`<video>` added as special tokens).
        qformer_tokenizer: the BERT tokenizer of the Q-Former (bert-base-uncased plus `[DEC]`).
        chat_template (`str`, *optional*): defaults to the `vicuna_v1` template.
        image_token, video_token (`str`): placeholders in prompts.
        num_patches (`int`): EVA patch tokens per frame (256 at 224 px, 576 at 336 px).
        compress_type (`str`, *optional*): as in the model config ("mean", "grid:g" or None).
        select_feature (`str`): as in the model config.
        qformer_max_length (`int`), qformer_truncation_side (`str`): Q-Former tokenisation (256, "left").
        video_fps (`float`): frames per second sampled from video files (1).
    """

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        qformer_tokenizer=None,
        chat_template: str | None = None,
        image_token: str = IMAGE_TOKEN,
        video_token: str = VIDEO_TOKEN,
        num_patches: int = 256,
        compress_type: str | None = "mean",
        select_feature: str = "patch",
        qformer_max_length: int = 256,
        qformer_truncation_side: str = "left",
        video_fps: float = 1.0,
        **kwargs,
    ):
        if chat_template is None:
            chat_template = default_chat_template()
        for token in (image_token, video_token):
            if tokenizer is not None and token not in tokenizer.get_vocab():
                tokenizer.add_tokens([AddedToken(token, normalized=False, special=True)], special_tokens=True)
        super().__init__(image_processor, tokenizer, qformer_tokenizer, chat_template=chat_template)
        self.image_token = image_token
        self.video_token = video_token
        self.num_patches = num_patches
        self.compress_type = compress_type
        self.select_feature = select_feature
        self.qformer_max_length = qformer_max_length
        self.qformer_truncation_side = qformer_truncation_side
        self.video_fps = video_fps
        self.image_token_id = tokenizer.convert_tokens_to_ids(image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(video_token)
        self._placeholder_re = re.compile("(" + re.escape(image_token) + "|" + re.escape(video_token) + ")")

    # ---- loading ---------------------------------------------------------------------------------------------------

    @classmethod
    def _get_arguments_from_pretrained(cls, pretrained_model_name_or_path, processor_dict=None, **kwargs):
        """Tokenizers through AutoTokenizer; the image processor from `processor_config.json` (no AutoImageProcessor,
        which transformers 5.17 only provides with torchvision installed)."""
        kwargs.pop("subfolder", None)
        tokenizer_kwargs = {
            k: v
            for k, v in kwargs.items()
            if k in ("cache_dir", "force_download", "local_files_only", "token", "revision", "proxies")
        }
        tokenizer = AutoTokenizer.from_pretrained(pretrained_model_name_or_path, **tokenizer_kwargs)
        qformer_tokenizer = AutoTokenizer.from_pretrained(
            pretrained_model_name_or_path, subfolder="qformer_tokenizer", **tokenizer_kwargs
        )
        image_processor_dict = (processor_dict or {}).get("image_processor")
        if isinstance(image_processor_dict, dict):
            image_processor = LlamaVidImageProcessor(**image_processor_dict)
        else:
            image_processor = LlamaVidImageProcessor.from_pretrained(pretrained_model_name_or_path, **tokenizer_kwargs)
        return [image_processor, tokenizer, qformer_tokenizer]

    # ---- helpers ---------------------------------------------------------------------------------------------------

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", *VISUAL_INPUT_NAMES]

    def tokens_per_frame(self, num_patches: int | None = None, has_class_token: bool = True) -> int:
        """LLM tokens per image/frame: 1 context token + content tokens (2 for "mean")."""
        patches = self.num_patches if num_patches is None else num_patches
        if has_class_token and self.select_feature == "cls_patch":
            patches += 1
        return 1 + content_tokens_per_frame(self.compress_type, patches)

    def tokenize_with_placeholders(
        self, text: str, placeholder_ids: Sequence[list[int]], boundaries: Sequence[int] | None = None
    ) -> list[int] | tuple[list[int], list[int]]:
        """LLaVA's `tokenizer_image_token`, with the k-th placeholder replaced by `placeholder_ids[k]`.

        With `boundaries` (character offsets into `text`, outside placeholders), also returns for each offset the
        index of the first token that ends after it: the tokens before that index hold only text before the offset
        (how a trainer finds where an answer starts and ends). A token that straddles an offset (a tokenizer that
        merges across a space) counts as after it. Needs a fast tokenizer (character offsets).
        """
        pieces = self._placeholder_re.split(text)
        chunks = pieces[::2]  # text between placeholders
        if len(chunks) - 1 != len(placeholder_ids):
            raise ValueError(f"The prompt has {len(chunks) - 1} placeholders but {len(placeholder_ids)} were expected.")
        if boundaries is None:
            encoded, offsets = self._encode_chunks(chunks), None
        else:
            encoded, offsets = self._encode_chunks(chunks, return_offsets=True)
        bos = self.tokenizer.bos_token_id
        offset = 1 if encoded and encoded[0] and bos is not None and encoded[0][0] == bos else 0
        ids = [encoded[0][0]] if offset else []
        chunk_starts = []  # token index where each chunk's own ids start
        for index, chunk_ids in enumerate(encoded):
            if index:
                ids.extend(placeholder_ids[index - 1])
            chunk_starts.append(len(ids))
            ids.extend(chunk_ids[offset:])
        if boundaries is None:
            return ids
        char_starts, position = [], 0  # character offset where each chunk starts in `text`
        for index, piece in enumerate(pieces):
            if index % 2 == 0:
                char_starts.append(position)
            position += len(piece)
        positions = []
        for boundary in boundaries:
            chunk = bisect.bisect_right(char_starts, boundary) - 1
            local = boundary - char_starts[chunk]
            if local > len(chunks[chunk]):
                raise ValueError(f"Character offset {boundary} falls inside a placeholder.")
            ends = [end for _, end in offsets[chunk][offset:]]
            positions.append(chunk_starts[chunk] + bisect.bisect_right(ends, local))
        return ids, positions

    def _encode_chunks(self, chunks: list[str], return_offsets: bool = False):
        """Tokenise text chunks like the original slow (sentencepiece) Llama tokenizer did.

        SentencePiece always adds its dummy-prefix '▁', also before a leading space (" Hi" -> "▁▁Hi"); the
        `tokenizers` Metaspace pre-tokenizer of converted Llama tokenizers does not add it when the text already
        starts with a space. Such chunks (e.g. Whisper subtitles after a frame placeholder) get one more space, which
        restores the sentencepiece pieces. The need is detected from the tokenizer's behaviour, not assumed.
        With `return_offsets`, also each token's (start, end) characters in its chunk: `(ids, offsets)`.
        """
        if getattr(self, "_absorbs_leading_space", None) is None:
            probe = self.tokenizer([" a", "a"], add_special_tokens=False)["input_ids"]
            self._absorbs_leading_space = probe[0] == probe[1]
        shifted = [bool(self._absorbs_leading_space and chunk.startswith(" ")) for chunk in chunks]
        chunks = [" " + chunk if shift else chunk for chunk, shift in zip(chunks, shifted)]
        if not return_offsets:
            # each chunk is tokenised on its own, so equal chunks (a movie's thousands of frames without subtitles)
            # are tokenised once
            distinct = list(dict.fromkeys(chunks))
            encoded = dict(zip(distinct, self.tokenizer(distinct, add_special_tokens=True)["input_ids"]))
            return [list(encoded[chunk]) for chunk in chunks]
        if not getattr(self.tokenizer, "is_fast", False):
            raise ValueError("Locating answer spans needs a fast tokenizer (character offsets); load it with use_fast.")
        encoded = self.tokenizer(chunks, add_special_tokens=True, return_offsets_mapping=True)
        offsets = [[(max(a - shift, 0), max(b - shift, 0)) for a, b in spans]
                   for spans, shift in zip(encoded["offset_mapping"], shifted)]
        return encoded["input_ids"], offsets

    def original_input_ids(self, text: str, image_token_index: int = -200) -> list[int]:
        """The ids the original LLaMA-VID code feeds its model: one `image_token_index` (-200) per placeholder.

        (For long videos the original first doubles every `<image>`; pass the doubled text to compare.)
        """
        count = len(self._placeholder_re.findall(text))
        return self.tokenize_with_placeholders(text, [[image_token_index]] * count)

    def encode_qformer_text(
        self, questions: Sequence[str | tuple[str, str]], return_tensors: str | None = None
    ) -> BatchFeature:
        """`qformer_input_ids` / `qformer_attention_mask` of questions (strings or sentence pairs), padded to the longest.

        What `__call__` makes from `qformer_text`: for callers that tokenise the prompt themselves (e.g. several questions
        about one video whose visual tokens are computed once, `moviellm_model.inference`).
        """
        return BatchFeature(data=self._encode_qformer(list(questions)), tensor_type=return_tensors)

    def _encode_qformer(self, questions: Sequence[str | tuple[str, str]]) -> dict[str, list[list[int]]]:
        tokenizer = self.qformer_tokenizer
        previous = tokenizer.truncation_side
        tokenizer.truncation_side = self.qformer_truncation_side
        try:
            rows = []
            for question in questions:
                if isinstance(question, (tuple, list)):
                    if len(question) != 2:
                        raise ValueError("A Q-Former question is a string or a pair of strings.")
                    encoded = tokenizer(
                        question[0], question[1], truncation=True, max_length=self.qformer_max_length
                    )
                else:
                    encoded = tokenizer(question, truncation=True, max_length=self.qformer_max_length)
                rows.append(encoded["input_ids"])
        finally:
            tokenizer.truncation_side = previous
        length = max((len(r) for r in rows), default=0)
        pad = tokenizer.pad_token_id or 0
        return {
            "qformer_input_ids": [r + [pad] * (length - len(r)) for r in rows],
            "qformer_attention_mask": [[1] * len(r) + [0] * (length - len(r)) for r in rows],
        }

    def _question_at(self, text: str, position: int) -> str:
        """Default Q-Former text of a placeholder: its user turn without placeholders and newlines.

        That is what LLaMA-VID training uses (`preprocess_imgsp_v1`) and, for `"<image>\\n" + question` prompts, what
        its evaluation scripts pass (the question).
        """
        start = text.rfind("USER:", 0, position)
        start = 0 if start < 0 else start + len("USER:")
        end = text.find("ASSISTANT:", position)
        end = len(text) if end < 0 else end
        turn = self._placeholder_re.sub("", text[start:end]).replace("\n", "")
        return turn.strip()

    def build_movie_prompt(
        self,
        question: str,
        subtitles: Sequence[str] | None = None,
        num_frames: int | None = None,
        inputs: str | None = None,
        chat: bool = True,
    ) -> str:
        """The long-video prompt of `run_llamavid_movie.py` / MovieLLM's answer script.

        The movie is `inputs` (the `inputs` string of an original `.pkl`: every frame as `<image>` followed by its
        subtitles) or is built from `subtitles` (one string per frame, may be empty) or `num_frames` placeholders.
        Returns the vicuna_v1 prompt `<system> USER: <start><movie><end>\\n<question> ASSISTANT:` (or only the user
        message with `chat=False`). Pass the question as `qformer_text` (or `MOVIELLM_QFORMER_QUESTIONS` to reproduce
        MovieLLM's fixed Q-Former prompt).
        """
        if inputs is None:
            if subtitles is None:
                if num_frames is None:
                    raise ValueError("Give the movie as `inputs`, `subtitles` (one per frame) or `num_frames`.")
                subtitles = [""] * num_frames
            inputs = movie_inputs(subtitles).replace(IMAGE_TOKEN, self.image_token)
        message = movie_message(inputs, question)
        if not chat:
            return message
        return render_vicuna_v1([{"role": "user", "content": message}], add_generation_prompt=True)

    # ---- main entry ------------------------------------------------------------------------------------------------

    def __call__(
        self,
        images: Any = None,
        text: str | Sequence[str] | None = None,
        videos: Any = None,
        video_features: Any = None,
        long_videos: Any = None,
        qformer_text: Sequence[str | tuple[str, str]] | str | None = None,
        do_pad_to_square: bool | None = None,
        padding: bool = True,
        return_tensors: str | None = None,
        audio: Any = None,
        add_special_tokens: bool | None = None,
        **kwargs: Any,
    ) -> BatchFeature:
        r"""Prepare model inputs.

        Args:
            images: images (PIL or arrays), a flat list in the order of their placeholders in `text`.
            text: one prompt or a batch; `<image>` marks an image (or a video when no images are given), `<video>` a
                video. A short video takes one placeholder. A long video takes one placeholder per frame (subtitles in
                between, as in the original `.pkl` inputs) or a single one.
            videos: short videos: paths (decoded at `video_fps`) or frames ([F, H, W, 3] arrays / lists of images).
            video_features: long videos: EVA patch features without the class token, [T, P, Cv] each.
            long_videos: long videos as frames instead of features: paths (decoded at `video_fps`) or frames; the
                model's vision tower makes their features (`pixel_values_long_videos`), which are then used exactly
                like `video_features` (same placeholders, same Q-Former input).
            qformer_text: one question (or `(question_1, question_2)` pair) per visual input, images first. By
                default each image/video takes the user turn that contains its placeholder; long videos need it.
            do_pad_to_square: pad still images to a square (training); default from the image processor.
            padding: pad the batch (side from `tokenizer.padding_side`).
            return_tensors: "pt" for torch tensors.
            audio, add_special_tokens: accepted for `apply_chat_template(tokenize=True)`; LLaMA-VID has no audio and
                always starts with one BOS, as the original.
        """
        if kwargs:
            raise TypeError(f"LlamaVidProcessor got unexpected arguments: {', '.join(sorted(kwargs))}.")
        if audio is not None:
            raise ValueError("LLaMA-VID takes no audio.")
        if text is None:
            raise ValueError("LlamaVidProcessor needs `text` (the prompt with its placeholders).")
        texts = [text] if isinstance(text, str) else list(text)
        images = _flatten(images)
        videos = None if videos is None else (list(videos) if isinstance(videos, (list, tuple)) else [videos])
        if video_features is not None and (hasattr(video_features, "ndim") and video_features.ndim == 3):
            video_features = [video_features]
        if long_videos is not None:
            long_videos = list(long_videos) if isinstance(long_videos, (list, tuple)) else [long_videos]
        if sum(x is not None for x in (videos, video_features, long_videos)) > 1:
            raise ValueError(
                "Pass one of `videos` (short videos), `video_features` or `long_videos` (long videos), not several."
            )

        visual = self._visual_inputs(images, videos, video_features, long_videos, do_pad_to_square)
        placeholders, visual_slots = self._assign_placeholders(texts, images, videos, visual)

        # Token ids, placeholders expanded in order.
        queue = {"image": iter(visual.image_groups), "video": iter(visual.video_groups)}
        rows = []
        for sample, prompt in enumerate(texts):
            groups = [next(queue[kind]) for s, _, kind in placeholders if s == sample]
            rows.append(self.tokenize_with_placeholders(prompt, groups))

        # Q-Former questions, one per visual input: images, then videos.
        data = visual.data
        if visual_slots:
            if qformer_text is None:
                if visual.long_counts:
                    raise ValueError("Long videos need `qformer_text`: the question the context tokens should follow.")
                qformer_text = [self._question_at(texts[s], p) for s, p in visual_slots]
            elif isinstance(qformer_text, (str, tuple)):
                qformer_text = [qformer_text] * len(visual_slots)
            qformer_text = list(qformer_text)
            if len(qformer_text) != len(visual_slots):
                raise ValueError(f"{len(qformer_text)} Q-Former questions for {len(visual_slots)} images/videos.")
            data.update(self._encode_qformer(qformer_text))

        data.update(self._pad(rows, padding))
        return BatchFeature(data=data, tensor_type=return_tensors)

    def _visual_inputs(self, images, videos, video_features, long_videos, do_pad_to_square) -> _VisualInputs:
        """The model's visual inputs (pixels, features, frame counts) and each input's placeholder token group."""
        visual = _VisualInputs()
        data = visual.data
        image_tpf = self.tokens_per_frame()
        if images:
            data["pixel_values"] = self.image_processor(images, do_pad_to_square=do_pad_to_square)["pixel_values"]
            visual.image_groups = [[self.image_token_id] * image_tpf for _ in images]
        if videos:
            frame_lists = [load_video_frames(video, fps=self.video_fps) for video in videos]
            counts = [len(frames) for frames in frame_lists]
            flat = [frame for frames in frame_lists for frame in frames]
            data["pixel_values_videos"] = self.image_processor(flat, do_pad_to_square=False)["pixel_values"]
            data["video_num_frames"] = counts
            visual.video_groups = [[self.video_token_id] * (n * image_tpf) for n in counts]
        if video_features is not None:
            arrays = [_to_float_array(f) for f in video_features]
            for array in arrays:
                if array.ndim != 3:
                    raise ValueError("Each entry of video_features must be [frames, patches, width].")
            visual.long_counts = [int(a.shape[0]) for a in arrays]
            if all(hasattr(a, "detach") for a in arrays):
                import torch

                data["video_features"] = torch.cat(list(arrays))
            else:
                data["video_features"] = np.concatenate([np.asarray(a) for a in arrays])
            data["video_features_num_frames"] = visual.long_counts
            visual.long_patches = [int(a.shape[1]) for a in arrays]
        if long_videos is not None:
            frame_lists = [load_video_frames(video, fps=self.video_fps) for video in long_videos]
            visual.long_counts = [len(frames) for frames in frame_lists]
            flat = [frame for frames in frame_lists for frame in frames]
            data["pixel_values_long_videos"] = self.image_processor(flat, do_pad_to_square=False)["pixel_values"]
            data["video_features_num_frames"] = visual.long_counts
            visual.long_patches = [self.num_patches] * len(visual.long_counts)
        visual.any_video = bool(videos) or video_features is not None or long_videos is not None
        return visual

    def _assign_placeholders(self, texts: list[str], images, videos, visual: _VisualInputs):
        """Which placeholder of which prompt stands for which input.

        Returns every placeholder as (sample, position, kind) in order, and the (sample, position) of each visual
        input's first placeholder (images, then videos: the order of the Q-Former questions). The token groups of
        long videos are set here, since they depend on whether the prompt has one placeholder per video or per frame.
        """
        # Which placeholder string refers to which kind.
        video_placeholder = self.video_token
        if visual.any_video and not images:
            video_placeholder = None  # both "<image>" and "<video>" mean the video
        placeholders: list[tuple[int, int, str]] = []  # (sample, position, kind)
        for sample, prompt in enumerate(texts):
            for match in self._placeholder_re.finditer(prompt):
                token = match.group(0)
                kind = "image" if token == self.image_token and (images or video_placeholder is not None) else "video"
                placeholders.append((sample, match.start(), kind))
        image_slots = [p for p in placeholders if p[2] == "image"]
        video_slots = [p for p in placeholders if p[2] == "video"]
        if len(image_slots) != len(images or []):
            raise ValueError(f"The text has {len(image_slots)} image placeholders for {len(images or [])} images.")
        visual_slots: list[tuple[int, int]] = [(s, p) for s, p, _ in image_slots]
        long_counts = visual.long_counts
        if videos:
            if len(video_slots) != len(videos):
                raise ValueError(f"The text has {len(video_slots)} video placeholders for {len(videos)} videos.")
            visual_slots += [(s, p) for s, p, _ in video_slots]
        elif long_counts:
            tpf = [self.tokens_per_frame(patches, has_class_token=False) for patches in visual.long_patches]
            if len(video_slots) == len(long_counts):  # one placeholder per long video
                visual.video_groups = [[self.video_token_id] * (n * t) for n, t in zip(long_counts, tpf)]
                visual_slots += [(s, p) for s, p, _ in video_slots]
            elif len(video_slots) == sum(long_counts):  # one placeholder per frame
                visual.video_groups = [[self.video_token_id] * t for n, t in zip(long_counts, tpf) for _ in range(n)]
                first, index = [], 0
                for n in long_counts:
                    first.append(video_slots[index][:2])
                    index += n
                visual_slots += first
            else:
                raise ValueError(
                    f"The text has {len(video_slots)} video placeholders for long videos of {long_counts} frames: use "
                    "one placeholder per frame or one per video."
                )
        elif video_slots:
            raise ValueError(f"The text has {len(video_slots)} video placeholders but no video was given.")
        return placeholders, visual_slots

    def _pad(self, rows: list[list[int]], padding: bool) -> dict[str, list[list[int]]]:
        if not padding:
            return {"input_ids": rows, "attention_mask": [[1] * len(r) for r in rows]}
        length = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        left = getattr(self.tokenizer, "padding_side", "right") == "left"
        ids, mask = [], []
        for row in rows:
            fill = length - len(row)
            ids.append([pad] * fill + row if left else row + [pad] * fill)
            mask.append([0] * fill + [1] * len(row) if left else [1] * len(row) + [0] * fill)
        return {"input_ids": ids, "attention_mask": mask}

    def batch_decode(self, *args, **kwargs):
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args, **kwargs):
        return self.tokenizer.decode(*args, **kwargs)


@dataclass
class _VisualInputs:
    """What `LlamaVidProcessor.__call__` makes of its visual arguments before the prompts are tokenised."""

    data: dict[str, Any] = field(default_factory=dict)  # model inputs: pixel values, features, frame counts
    image_groups: list[list[int]] = field(default_factory=list)  # placeholder ids per image, in order
    video_groups: list[list[int]] = field(default_factory=list)  # ... per video (or per long-video frame)
    long_counts: list[int] = field(default_factory=list)  # frames per long video
    long_patches: list[int] = field(default_factory=list)  # patches per frame of each long video
    any_video: bool = False


def _flatten(images: Any) -> list | None:
    if images is None:
        return None
    if not isinstance(images, (list, tuple)):
        return [images]
    flat = []
    for item in images:
        if isinstance(item, (list, tuple)):
            flat.extend(item)
        else:
            flat.append(item)
    return flat
