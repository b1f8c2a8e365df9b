"""``moviellm chat --model M (--video FILE | --features FILE) "question"``: one answer, streamed to stdout."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..argtypes import positive_int
from ..cli import verb
from ..errors import ConfigError
from .answer import add_generation_arguments, add_model_arguments, generation_settings, load, require_model_extra

#: A video with more frames than this (at 1 fps) is a long video: the movie prompt, like `run_llamavid_movie.py`.
#: LLaMA-VID's short-video demo worker refuses videos above 180 frames.
MAX_SHORT_FRAMES = 180
CHAT_MAX_NEW_TOKENS = 512  # LLaMA-VID's CLI and demo default


def _arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--video", metavar="FILE",
                        help="A video file, sampled at 1 frame per second. A short clip takes LLaMA-VID's short-video "
                             "prompt; a long one (see --long) the movie prompt.")
    source.add_argument("--features", metavar="FILE",
                        help="A movie's EVA features: a .safetensors file from `moviellm export llamavid --model` "
                             "(feats [T, 257, 1408], subtitles in its metadata). Pickles are never read.")
    p.add_argument("question", help="The question to ask.")
    p.add_argument("--long", action="store_true",
                   help=f"Treat --video as a long video (movie prompt) even with at most {MAX_SHORT_FRAMES} frames.")
    p.add_argument("--max-short-frames", type=positive_int, default=MAX_SHORT_FRAMES,
                   help=f"Videos with more frames (at 1 fps) are long videos. Default: {MAX_SHORT_FRAMES}.")
    add_generation_arguments(p, max_new_tokens=CHAT_MAX_NEW_TOKENS)


def _read_features(path: Path):
    """`feats` and the subtitle string of an exported features file (safetensors only)."""
    if not path.is_file():
        raise ConfigError(f"features file {path} does not exist; give a .safetensors file from `moviellm export "
                          "llamavid --model`.")
    if path.suffix == ".pkl":
        raise ConfigError(f"{path} is a pickle, which can run code when loaded; convert it to safetensors with "
                          "`moviellm export llamavid --model` instead.")
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as handle:
            if "feats" not in handle.keys():
                raise ConfigError(f"{path} holds no 'feats' tensor; give a features file from `moviellm export "
                                  "llamavid --model`.")
            return handle.get_tensor("feats"), (handle.metadata() or {}).get("inputs") or None
    except (SafetensorError, OSError) as error:
        raise ConfigError(f"{path} is not a safetensors file ({error}); give a features file from `moviellm export "
                          "llamavid --model`.") from None


@verb("chat", "Ask a LLaMA-VID model one question about a video or a movie's features; the answer streams to stdout.",
      _arguments)
def run_chat(args: argparse.Namespace) -> int:
    import itertools

    require_model_extra()
    if args.video is not None and not Path(args.video).is_file():
        raise ConfigError(f"video {args.video} does not exist; give a video file.")
    feats = inputs = None
    if args.features is not None:
        feats, inputs = _read_features(Path(args.features))
    loaded = load(args, compile=False)  # one question: compiling would cost more than it saves
    from transformers import TextStreamer

    from moviellm_model.inference.answering import answer_questions, encode_features, encode_frames
    from moviellm_model.inference.settings import resolve_qformer_query
    from moviellm_model.processing_llamavid import iter_video_frames

    model, processor = loaded.model, loaded.processor
    try:
        if feats is not None:
            video = encode_features(model, feats, inputs=inputs)
        else:
            frames = iter_video_frames(args.video, fps=processor.video_fps)
            head = list(itertools.islice(frames, args.max_short_frames + 1))
            long = args.long or len(head) > args.max_short_frames
            video = encode_frames(model, processor, itertools.chain(head, frames), long=long)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    settings = generation_settings(args, long_video=video.long, max_new_tokens=CHAT_MAX_NEW_TOKENS)
    policy = resolve_qformer_query(args.qformer_query, model.config, video.long)
    streamer = TextStreamer(processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
    answer_questions(model, processor, video, [args.question], settings, qformer_query=policy, streamer=streamer)
    sys.stdout.flush()
    return 0
