"""LLaMA-VID training files from a movie dataset (llamavid-spec.md sections 1.8 and 3).

``moviellm export llamavid DIR --out OUT`` writes

- ``OUT/long_videoqa.json``: LLaVA-style samples in the LongVideoQA layout, one per QA pair::

      {"id": "m000000_ab12cd34_007", "video": "videos/m000000_ab12cd34.safetensors",
       "conversations": [{"from": "human", "value": "<movie>\\n<question>"}, {"from": "gpt", "value": "<answer>"}],
       "movie_id": ..., "qa_type": "plot", "evidence": [start, end], "num_frames": T, "tokens_per_frame": 2}

  The movie in the human turn is written out as the original trainer builds it from a ``.pkl`` (section 3.3):
  every frame as ``<image>`` repeated ``tokens_per_frame`` (= ``video_token``, 2: one context and one content
  token) times, followed by the subtitle shown on that frame; so a T-frame movie carries exactly 2T
  placeholders and the sample needs nothing else to be tokenised. (LlamaVidProcessor takes one placeholder
  per frame: ``value.replace("<image>" * 2, "<image>")``.) By default the movie is wrapped in the prompt of
  the original inference scripts ("Below is a movie. ..." / "Now the movie end."), so training and
  evaluation see the same wording; ``prompt="plain"`` leaves it out.
- ``OUT/videos/<movie id>.safetensors`` (``features="eva"``): ``feats``, float16 [T, 1 + P, C] = the EVA
  tower's output with the class token first ([T, 257, 1408] for the released EVA-ViT-g/14 at 224 px), the
  tensor the original ``.pkl`` holds; consumers drop the class token (``feats[:, 1:]``). The metadata holds
  the ``.pkl``'s ``inputs`` string, the frame count and the model it came from.
  Or ``OUT/videos/<movie id>.mp4`` (``features="frames"``): the movie's keyframes at 1 fps, for trainers that
  run the vision tower themselves.
- ``OUT/export.yaml``: what made the export (source, settings, counts), so a rerun can check it continues
  the same export.

``video`` paths are relative to the export folder (``videos/<id>.<ext>``), so ``OUT`` is the original trainer's
``--video_folder`` (its stage-3 script passes the data root). Every movie's mp4 is decoded and its frames counted
against the script before anything of it is written: a member that is not a video, or a video shorter than its
timeline, stops the export with one sentence instead of conversations about frames that do not exist.

The ``frames`` export is for trainers that run the vision tower themselves (ours: ``moviellm train`` with a
``llava`` source). The original LLaMA-VID trainer reads an mp4 as a *short* video: it samples it and collapses the
per-frame placeholders into one ``<image>``, so it does not train the long-video path from it; give it ``eva``
features with ``legacy_pickle`` instead.

``legacy_pickle=True`` writes the original format instead: ``<id>.pkl`` = pickle of {"feats", "inputs"} and a
human turn with a single ``<image>`` that the original trainer replaces by ``inputs`` (section 1.8). Pickle
only behind that flag: nothing here ever unpickles.

A rerun with the same command skips movies whose feature file is complete; files are written to a
temporary name and renamed.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from tqdm.auto import tqdm

from moviellm_model.input_format import (
    IMAGE_TOKEN,
    LONG_VIDEO_TOKENS_PER_FRAME,
    expand_placeholders,
    movie_message,
)
from moviellm_model.input_format import movie_inputs as _movie_inputs

from . import __version__
from .errors import ConfigError, ShardError, stage
from .fileio import atomic_write_text, make_writable_folder, replacing
from .preview import iter_frames
from .script import QA_TYPES, MovieScript
from .shards import MovieSample, iter_movie_samples, resolve_shards

logger = logging.getLogger(__name__)

#: ``video_token`` of LLaMA-VID: tokens per long-video frame (one context + one content token, compress "mean").
TOKENS_PER_FRAME = LONG_VIDEO_TOKENS_PER_FRAME
JSON_NAME = "long_videoqa.json"
VIDEOS_DIR = "videos"
SETTINGS_NAME = "export.yaml"
FEATURES_FORMAT = "moviellm.llamavid.features/1"


@dataclass
class ExportOptions:
    """How to export.

    Args:
        out: the export folder (new, empty, or an earlier export with the same settings).
        features: "eva" (EVA tower features, needs ``model``) or "frames" (the mp4 at 1 fps).
        model: a LLaMA-VID checkpoint (folder or Hub id) whose vision tower makes the EVA features.
        legacy_pickle: write the original ``.pkl`` files and single-placeholder conversations (needs "eva").
        qa_types: QA types to export (default: all).
        prompt: "movie" (the inference scripts' wrapper around the movie) or "plain".
        tokens_per_frame: placeholders per frame in the expanded conversation (LLaMA-VID's video_token).
        batch_size: frames per forward pass of the vision tower (the original extractor used 48).
        device: torch device for the vision tower (default: cuda when available, else cpu).
    """

    out: Path
    features: str = "frames"
    model: str | None = None
    legacy_pickle: bool = False
    qa_types: Sequence[str] | None = None
    prompt: str = "movie"
    tokens_per_frame: int = TOKENS_PER_FRAME
    batch_size: int = 48
    device: str | None = None

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        if self.features not in ("eva", "frames"):
            raise ConfigError(f"--features must be eva or frames, got {self.features!r}.")
        if self.features == "eva" and not self.model:
            raise ConfigError("--features eva needs --model, the LLaMA-VID checkpoint whose vision tower makes them.")
        if self.legacy_pickle and self.features != "eva":
            raise ConfigError("--legacy-pickle stores EVA features; give --model (and --features eva) with it.")
        if self.prompt not in ("movie", "plain"):
            raise ConfigError(f"--prompt must be movie or plain, got {self.prompt!r}.")
        if self.qa_types is not None:
            unknown = sorted(set(self.qa_types) - set(QA_TYPES))
            if unknown:
                raise ConfigError(f"unknown QA type(s) {', '.join(unknown)}; choose from {', '.join(QA_TYPES)}.")
        if self.tokens_per_frame < 1 or self.batch_size < 1:
            raise ConfigError("--tokens-per-frame and --batch-size must be at least 1.")

    def settings(self, source: Path) -> dict:
        """What decides the files' content; an earlier export in ``out`` must have made them the same way."""
        return {
            "source": str(source.resolve()),
            "features": self.features,
            "model": self.model,
            "legacy_pickle": self.legacy_pickle,
            "qa_types": sorted(self.qa_types) if self.qa_types else None,
            "prompt": self.prompt,
            "tokens_per_frame": self.tokens_per_frame,
        }


@dataclass
class ExportResult:
    out: Path
    json_path: Path
    samples: int = 0
    movies: int = 0
    written: int = 0
    skipped: int = 0
    feature_shape: list[int] | None = None
    files: list[Path] = field(default_factory=list)


# ------------------------------------------------------------------------------------ conversations


def movie_inputs(script: MovieScript) -> str:
    """The ``inputs`` string of an original ``.pkl``: per frame, ``<image>`` then the subtitle shown on it."""
    return _movie_inputs(frame.subtitle for frame in script.timeline)


def human_turn(movie: str, question: str, prompt: str = "movie") -> str:
    """The user message: the movie (placeholders and subtitles), then the question on its own line."""
    return movie_message(movie, question, wrapper=prompt == "movie")


def conversation_samples(script: MovieScript, video: str, options: ExportOptions) -> list[dict]:
    """One LLaVA sample per selected QA pair of a movie."""
    inputs = movie_inputs(script)
    movie = IMAGE_TOKEN if options.legacy_pickle else expand_placeholders(inputs, options.tokens_per_frame)
    samples = []
    for k, qa in enumerate(script.qa):
        if options.qa_types and qa.type not in options.qa_types:
            continue
        samples.append({
            "id": f"{script.id}_{k:03d}",
            "video": video,
            "conversations": [
                {"from": "human", "value": human_turn(movie, qa.question, options.prompt)},
                {"from": "gpt", "value": qa.answer},
            ],
            "movie_id": script.id,
            "title": script.title,
            "qa_type": qa.type,
            "evidence": [qa.evidence.start, qa.evidence.end],
            "num_frames": script.num_frames,
            "tokens_per_frame": options.tokens_per_frame,
        })
    return samples


# -------------------------------------------------------------------------------------- EVA features


class EvaFeatureExtractor:
    """The EVA vision tower of a LLaMA-VID checkpoint, loaded alone (the language model is not read).

    Args:
        model: a folder saved by ``LlamaVidForConditionalGeneration.save_pretrained`` (or ``LlamaVidModel``), or a
            Hub id of one (only the config, the image processor config and the shards holding the tower are fetched).
        device: torch device; default cuda when available, else cpu.
        batch_size: frames per forward pass.
    """

    def __init__(self, model: str, device: str | None = None, batch_size: int = 48) -> None:
        _check_model_argument(model)  # before the heavy imports: a typo should not cost seconds
        try:
            import torch
            from moviellm_model.vision_tower import load_vision_tower
        except ImportError as err:
            raise ConfigError(
                f"EVA features need the model package and torch ({err.name or err} cannot be imported); "
                "install them with pip install 'moviellm[model]', or export --features frames."
            ) from None
        self.torch = torch
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        # fp16 on GPU like the original extractor; fp32 on CPU, where half matmuls are slow or missing.
        self.dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        try:
            self.tower, self.processor = load_vision_tower(model, device=self.device, dtype=self.dtype)
        except ValueError as err:
            raise ConfigError(f"{model} is not a usable LLaMA-VID checkpoint ({_first_line(err)}); give a folder saved "
                              "by LlamaVidForConditionalGeneration.save_pretrained or its Hub id.") from None
        except OSError as err:
            raise ConfigError(f"cannot read --model {model} ({_first_line(err)}); check the folder or the Hub id.") from None
        self.batch_size = batch_size
        self.name = model

    def __call__(self, frames: Iterable[np.ndarray]) -> np.ndarray:
        """EVA output of every frame, class token first: float16 [T, 1 + P, C]."""
        torch = self.torch
        out: list[np.ndarray] = []
        batch: list[np.ndarray] = []

        def flush() -> None:
            pixels = torch.from_numpy(self.processor(batch)["pixel_values"]).to(self.device, self.dtype)
            with torch.inference_mode():
                out.append(self.tower(pixels).to(torch.float16).cpu().numpy())
            batch.clear()

        for frame in frames:
            batch.append(frame)
            if len(batch) == self.batch_size:
                flush()
        if batch:
            flush()
        if not out:
            raise ShardError("a movie without frames cannot be exported.")
        return np.concatenate(out)


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else type(err).__name__


def _check_model_argument(model: str) -> None:
    path = Path(model)
    if not path.is_dir() and (path.exists() or model.startswith((".", "/", "~")) or model.count("/") != 1):
        raise ConfigError(f"--model {model} is neither a checkpoint folder nor a Hub id (ORG/NAME).")


# ------------------------------------------------------------------------------------- feature files


def write_features(path: Path, feats: np.ndarray, inputs: str, movie_id: str, model: str) -> None:
    """``feats`` and the movie's ``inputs`` as safetensors, atomically."""
    from safetensors.numpy import save_file

    metadata = {"format": FEATURES_FORMAT, "movie_id": movie_id, "inputs": inputs, "num_frames": str(len(feats)),
                "model": model, "layout": "frames x (class token + patches) x width; video_features = feats[:, 1:]"}
    with replacing(path) as tmp:
        save_file({"feats": np.ascontiguousarray(feats, dtype=np.float16)}, str(tmp), metadata=metadata)
        _readable(tmp)


def _readable(path: Path) -> None:
    """safetensors creates its file private (0600); give it the usual permissions (umask applies)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def write_legacy_pickle(path: Path, feats: np.ndarray, inputs: str) -> None:
    """The original extractor's file: a pickled dict {"feats": float16 [T, 257, 1408], "inputs": str}."""
    with replacing(path) as tmp, open(tmp, "wb") as fh:
        pickle.dump({"feats": np.ascontiguousarray(feats, dtype=np.float16), "inputs": inputs}, fh, protocol=4)


def _complete(path: Path, script: MovieScript) -> bool:
    """Is an existing per-movie file from an earlier run whole? (pickles are judged by size, never loaded)."""
    if not path.exists():
        return False
    if path.suffix == ".safetensors":
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="numpy") as fh:
                return fh.get_slice("feats").get_shape()[0] == script.num_frames
        except Exception:  # noqa: BLE001 - any unreadable file is redone
            return False
    return path.stat().st_size > 0


def _video_name(script: MovieScript, options: ExportOptions) -> str:
    """The movie's file, relative to the export folder (the original trainer's ``--video_folder``)."""
    if options.features == "frames":
        name = f"{script.id}.mp4"
    else:
        name = f"{script.id}.pkl" if options.legacy_pickle else f"{script.id}.safetensors"
    return f"{VIDEOS_DIR}/{name}"


# -------------------------------------------------------------------------------------------- export


def _prepare_out(out: Path, settings: dict) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; choose a folder path.")
    settings_path = out / SETTINGS_NAME
    if out.is_dir() and any(out.iterdir()):
        if not settings_path.exists():
            raise ConfigError(f"--out {out} is not empty and holds no moviellm export; choose a new or empty folder.")
        try:
            earlier = (yaml.safe_load(settings_path.read_text(encoding="utf-8")) or {}).get("settings")
        except yaml.YAMLError:
            earlier = None
        if earlier != settings:
            changed = sorted(k for k in settings if (earlier or {}).get(k) != settings[k])
            raise ConfigError(f"{out} holds an export made with other settings ({', '.join(changed)} differ); "
                              "rerun with the same options or choose a new --out.")
    make_writable_folder(out / VIDEOS_DIR, "export folder")
    if not settings_path.exists():  # claim the folder first: a run that fails half-way is continued by a rerun
        _write_settings(settings_path, settings, ExportResult(out=out, json_path=out / JSON_NAME))


def export_llamavid(source: str | Path, options: ExportOptions, progress: bool = True,
                    extractor: EvaFeatureExtractor | None = None) -> ExportResult:
    """Export a movie dataset folder (or shard) as LLaMA-VID stage-3 training files; see the module docstring."""
    source = Path(source)
    if not source.exists():
        raise ConfigError(f"dataset folder {source} does not exist; give a folder made by `moviellm generate` or `moviellm pull`.")
    shards = resolve_shards(source)
    settings = options.settings(source)
    out = options.out
    _prepare_out(out, settings)
    if options.features == "eva" and extractor is None:
        extractor = EvaFeatureExtractor(options.model, device=options.device, batch_size=options.batch_size)
    result = ExportResult(out=out, json_path=out / JSON_NAME)
    samples: list[dict] = []
    seen: set[str] = set()
    with tqdm(desc="export", unit="movie", disable=not progress) as bar:
        for movie in iter_movie_samples(shards):  # scripts validated, ids checked against their sample keys
            script = movie.script
            if script.id in seen:
                continue  # the same movie in two shards: export it once
            seen.add(script.id)
            video = _video_name(script, options)
            path = out / video
            if _complete(path, script):
                result.skipped += 1
            else:
                _write_movie(path, movie, options, extractor, result)
                result.written += 1
            result.files.append(path)
            samples.extend(conversation_samples(script, video, options))
            result.movies += 1
            bar.update(1)
    if not result.movies:
        raise ShardError(f"{source} holds no movies to export.")
    _write_json(result.json_path, samples)
    result.samples = len(samples)
    _write_settings(out / SETTINGS_NAME, settings, result)
    return result


def _write_movie(path: Path, movie: MovieSample, options: ExportOptions,
                 extractor: EvaFeatureExtractor | None, result: ExportResult) -> None:
    """One movie's file: its mp4 once decoded and counted, or the features of every frame (checked likewise)."""
    script = movie.script
    if options.features == "frames":
        movie.check_video()  # a member that is not a video, or a short one, is refused before anything is copied
        with stage(f"copying the video of movie {script.id} to {path}"), replacing(path) as tmp:
            tmp.write_bytes(movie.mp4)
        return
    assert extractor is not None
    feats = extractor(iter_frames(movie.mp4, source=f"{movie.where}.mp4"))
    if len(feats) != script.num_frames:
        raise ShardError(f"{movie.where}.mp4 has {len(feats)} frames but its script has {script.num_frames}; "
                         "regenerate the movie.")
    result.feature_shape = list(feats.shape)
    inputs = movie_inputs(script)
    with stage(f"writing the features of movie {script.id} to {path}"):
        if options.legacy_pickle:
            write_legacy_pickle(path, feats, inputs)
        else:
            write_features(path, feats, inputs, script.id, extractor.name)


def _write_json(path: Path, samples: list[dict]) -> None:
    with stage(f"writing {path}"), replacing(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        json.dump(samples, fh, ensure_ascii=False, indent=1)


def _write_settings(path: Path, settings: dict, result: ExportResult) -> None:
    if result.feature_shape is None and path.exists():  # every movie was already there: keep what was recorded
        try:
            result.feature_shape = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("feature_shape")
        except yaml.YAMLError:
            pass
    document = {
        "moviellm_version": __version__,
        "format": "LLaMA-VID LongVideoQA (llamavid-spec.md section 3); video paths relative to this folder "
                  "(the trainer's --video_folder)",
        "settings": settings,
        "movies": result.movies,
        "samples": result.samples,
        "feature_shape": result.feature_shape,
    }
    atomic_write_text(path, yaml.safe_dump(document, sort_keys=False, allow_unicode=True))


__all__ = [
    "EvaFeatureExtractor", "ExportOptions", "ExportResult", "conversation_samples", "expand_placeholders",
    "export_llamavid", "human_turn", "movie_inputs", "write_features", "write_legacy_pickle",
]
