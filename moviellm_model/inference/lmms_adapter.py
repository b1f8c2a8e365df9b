"""lmms-eval model adapter: `python -m lmms_eval --model llamavid --model_args pretrained=DIR --tasks ...`.

Installed with the optional extra `lmms` (`pip install 'moviellm[lmms]'`), lmms-eval finds this class through the
`lmms_eval.models` entry point of the package (`model_manifest` below). Without lmms-eval nothing here is imported.

It is a "simple" lmms-eval model: each request is a context string, generation settings and a function returning the
doc's visuals (video paths, frames or images). Videos go through `moviellm_model.inference` like `moviellm answer`:
read once at 1 frame per second, short clips with LLaMA-VID's short-video prompt, videos of more than
`max_short_frames` frames with the movie prompt, and all the requests about one video with the same settings answered
together (one shared prefix with `qformer_query=moviellm`). `model_args`: pretrained, revision, device, dtype,
batch_size, qformer_query, max_short_frames.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

try:
    from lmms_eval.api.model import lmms
except ImportError as error:  # pragma: no cover - only when someone imports this without the extra
    raise ImportError(f"the lmms-eval adapter needs lmms-eval ({error.name} is missing): "
                      "pip install 'moviellm[lmms]'") from None

from ..input_format import IMAGE_TOKEN, VIDEO_TOKEN, render_vicuna_v1
from ..processing_llamavid import iter_video_frames
from .answering import answer_questions, encode_frames
from .loading import load_model
from .settings import GenerationSettings, resolve_qformer_query

__all__ = ["LlamaVidLmms", "model_manifest"]

MODEL_ID = "llamavid"


def model_manifest():
    """What the `lmms_eval.models` entry point gives lmms-eval (0.7+): the model id and this class."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_ID, simple_class_path=f"{__name__}.LlamaVidLmms")


def _flag(value: Any) -> bool:
    return value if isinstance(value, bool) else str(value).strip().lower() in ("1", "true", "yes")


class LlamaVidLmms(lmms):
    """LLaMA-VID (`LlamaVidForConditionalGeneration`) for lmms-eval."""

    is_simple = True

    def __init__(self, pretrained: str, revision: str | None = None, device: str | None = None, dtype: str = "auto",
                 batch_size: int | str = 8, qformer_query: str | None = None, max_short_frames: int | str = 180,
                 **kwargs: Any) -> None:
        super().__init__()
        loaded = load_model(pretrained, revision=revision, dtype=dtype, device=device)
        self.loaded = loaded
        self._model, self.processor = loaded.model, loaded.processor
        self.batch_size_per_gpu = int(batch_size)
        self.qformer_query = qformer_query
        self.max_short_frames = int(max_short_frames)

    # lmms-eval reads these
    @property
    def model(self):
        return self._model

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    @property
    def device(self):
        return self._model.device

    # ------------------------------------------------------------------------------------------ helpers

    def _settings(self, gen_kwargs: dict, long_video: bool) -> tuple[GenerationSettings, list[str]]:
        until = gen_kwargs.get("until") or []
        until = [until] if isinstance(until, str) else list(until)
        temperature = float(gen_kwargs.get("temperature") or 0)
        sample = _flag(gen_kwargs.get("do_sample", False)) and temperature > 0
        settings = GenerationSettings(
            max_new_tokens=int(gen_kwargs.get("max_new_tokens") or 1024),
            do_sample=sample,
            temperature=temperature if sample else None,
            top_p=float(gen_kwargs["top_p"]) if sample and gen_kwargs.get("top_p") is not None else None,
            num_beams=int(gen_kwargs.get("num_beams") or 1),
        )
        return settings, until

    def _encode_visual(self, visual):
        """A video (path or [F, H, W, 3] frames) read once; None for images."""
        if isinstance(visual, str):
            frames = iter_video_frames(visual, fps=self.processor.video_fps)
        elif isinstance(visual, np.ndarray) and visual.ndim == 4:
            frames = iter(list(visual))
        else:
            return None
        head = list(itertools.islice(frames, self.max_short_frames + 1))
        long = len(head) > self.max_short_frames
        return encode_frames(self._model, self.processor, itertools.chain(head, frames), long=long)

    @staticmethod
    def _cut(text: str, until: Sequence[str]) -> str:
        for stop in until:
            if stop and stop in text:
                text = text.split(stop, 1)[0]
        return text.strip()

    def _image_answer(self, context: str, images: list, settings: GenerationSettings) -> str:
        """Images (or no visual): the processor's prompt with one `<image>` per image, then `generate`."""
        question = context.replace(IMAGE_TOKEN, "").strip()
        content = "".join(f"{IMAGE_TOKEN}\n" for _ in images) + question
        prompt = render_vicuna_v1([{"role": "user", "content": content}])
        encoded = self.processor(text=prompt, images=images or None, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            output = self._model.generate(**encoded, **settings.generate_kwargs(),
                                          pad_token_id=self.tokenizer.pad_token_id or 0,
                                          eos_token_id=self.tokenizer.eos_token_id)
        return self.tokenizer.decode(output[0, encoded["input_ids"].shape[1]:], skip_special_tokens=True).strip()

    def _visuals(self, request) -> tuple[str, dict, list]:
        context, gen_kwargs, doc_to_visual, doc_id, task, split = request.args
        visuals = doc_to_visual(self.task_dict[task][split][doc_id]) if doc_to_visual is not None else []
        visuals = [v for v in (visuals or []) if v is not None]
        return context, dict(gen_kwargs or {}), visuals

    # --------------------------------------------------------------------------------------- lmms API

    def generate_until(self, requests) -> list[str]:
        """Answers in request order; requests about the same video with the same settings are answered together."""
        results: list[str | None] = [None] * len(requests)
        groups: dict[tuple, list[tuple[int, str]]] = {}
        pending_images = []
        for index, request in enumerate(requests):
            context, gen_kwargs, visuals = self._visuals(request)
            if len(visuals) == 1 and isinstance(visuals[0], (str, np.ndarray)):
                key = (visuals[0] if isinstance(visuals[0], str) else id(visuals[0]), repr(sorted(gen_kwargs.items())))
                groups.setdefault(key, []).append((index, context))
            else:
                pending_images.append((index, context, gen_kwargs, visuals))
        for (_, _), members in groups.items():
            first = requests[members[0][0]]
            _, gen_kwargs, visuals = self._visuals(first)
            video = self._encode_visual(visuals[0])
            settings, until = self._settings(gen_kwargs, video.long)
            policy = resolve_qformer_query(self.qformer_query, self._model.config, video.long)
            questions = [context.replace(IMAGE_TOKEN, "").strip() for _, context in members]
            answers = answer_questions(self._model, self.processor, video, questions, settings, qformer_query=policy,
                                       batch_size=self.batch_size_per_gpu)
            for (index, _), answer in zip(members, answers):
                results[index] = self._cut(answer, until)
        for index, context, gen_kwargs, visuals in pending_images:
            settings, until = self._settings(gen_kwargs, long_video=False)
            results[index] = self._cut(self._image_answer(context, visuals, settings), until)
        return [text or "" for text in results]

    def loglikelihood(self, requests) -> list[tuple[float, bool]]:
        """Log-probability of each continuation after its context (and visuals), and whether greedy decoding gives it."""
        scores = []
        for request in requests:
            context, doc_to_target, doc_to_visual, doc_id, task, split = request.args
            doc = self.task_dict[task][split][doc_id]
            continuation = doc_to_target(doc) if callable(doc_to_target) else str(doc_to_target)
            visuals = [v for v in (doc_to_visual(doc) if doc_to_visual is not None else []) or [] if v is not None]
            scores.append(self._score(context, str(continuation), visuals))
        return scores

    def _score(self, context: str, continuation: str, visuals: list) -> tuple[float, bool]:
        question = context.replace(IMAGE_TOKEN, "").strip()
        videos = [v for v in visuals if isinstance(v, str) or (isinstance(v, np.ndarray) and v.ndim == 4)]
        images = [v for v in visuals if not (isinstance(v, str) or (isinstance(v, np.ndarray) and v.ndim == 4))]
        content = f"{IMAGE_TOKEN}\n" * len(images) + f"{VIDEO_TOKEN}\n" * len(videos) + question
        prompt = render_vicuna_v1([{"role": "user", "content": content}])
        inputs = {"images": images or None}
        if videos:
            inputs["videos"] = videos
        prompt_ids = self.processor(text=prompt, **inputs)["input_ids"][0]
        encoded = self.processor(text=prompt + " " + continuation, return_tensors="pt", **inputs).to(self.device)
        ids = encoded["input_ids"]
        start = len(prompt_ids)
        with torch.inference_mode():
            logits = self._model(**encoded).logits[0, start - 1 : -1].float()
        target = ids[0, start:]
        logprobs = torch.log_softmax(logits, dim=-1)
        total = float(logprobs.gather(-1, target[:, None]).sum())
        greedy = bool((logits.argmax(-1) == target).all())
        return total, greedy

    def generate_until_multi_round(self, requests) -> list[str]:
        raise NotImplementedError("LLaMA-VID's lmms-eval adapter answers single-round requests only.")
