"""``moviellm answer --model M --benchmark B --out predictions.jsonl``: a model's answers to a whole benchmark.

The options that load a model and decode (shared with ``moviellm chat``) are defined here too. Everything heavy
(torch, transformers) is imported inside the run functions, so ``--help`` works on the core install.
"""

from __future__ import annotations

import argparse

from ..argtypes import positive_float, positive_int, probability
from ..cli import verb
from ..errors import ConfigError
from ..options import add_progress_option

QFORMER_QUERIES = ("question", "moviellm")  # moviellm_model.input_format.QFORMER_QUERIES, checked at run time
DTYPES = ("auto", "float32", "bfloat16", "float16")
CACHES = ("auto", "dynamic", "static")


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, metavar="PATH_OR_ID",
                   help="LLaMA-VID checkpoint: a folder saved by save_pretrained (model + processor) or a Hub model id.")
    p.add_argument("--revision", default=None, help="Branch, tag or commit of a Hub model (recorded). Default: main.")
    p.add_argument("--dtype", choices=DTYPES, default="auto",
                   help="Weights' dtype. auto: float32 on the CPU, the checkpoint's dtype on a GPU. Default: auto.")
    p.add_argument("--device", default=None, help="Torch device. Default: cuda when available, else cpu.")
    p.add_argument("--device-map", default=None, metavar="MAP",
                   help='Spread the model over devices with accelerate, e.g. "auto" (instead of --device).')


def add_generation_arguments(p: argparse.ArgumentParser, max_new_tokens: int) -> None:
    p.add_argument("--settings", choices=["greedy", "original"], default="greedy",
                   help="greedy: greedy decoding, reproducible (default). original: the original scripts' sampling "
                        "(movies: temperature 0.6, top_p 0.9; short videos: temperature 0.2, top_p of the "
                        "checkpoint; up to 1024 new tokens). The options below override the preset.")
    p.add_argument("--max-new-tokens", type=positive_int, default=None,
                   help=f"Tokens generated at most per answer (answers end at </s> before). Default: {max_new_tokens}.")
    p.add_argument("--do-sample", action="store_true", default=None, help="Sample instead of greedy decoding.")
    p.add_argument("--temperature", type=positive_float, default=None, help="Sampling temperature (implies --do-sample).")
    p.add_argument("--top-p", type=probability, default=None, help="Nucleus sampling threshold (implies --do-sample).")
    p.add_argument("--seed", type=int, default=0, help="Sampling seed (each video derives its own from it). Default: 0.")
    p.add_argument("--qformer-query", choices=QFORMER_QUERIES, default=None,
                   help="What conditions a video's context tokens: question (the bare question, LLaMA-VID's scripts) "
                        "or moviellm (MovieLLM's fixed pair of generic questions, its published protocol; lets all "
                        "questions about a movie share one prefilled prefix). Default: the checkpoint's "
                        "config.qformer_query, else moviellm for movies and question for short videos.")


def generation_settings(args: argparse.Namespace, long_video: bool, max_new_tokens: int):
    from moviellm_model.inference.settings import GenerationSettings

    try:
        return GenerationSettings.preset(args.settings, long_video=long_video,
                                         max_new_tokens=args.max_new_tokens or (None if args.settings == "original"
                                                                                 else max_new_tokens),
                                         do_sample=args.do_sample, temperature=args.temperature, top_p=args.top_p,
                                         seed=args.seed)
    except ValueError as error:
        raise ConfigError(str(error)) from None


def require_model_extra() -> None:
    """Fail first, in one sentence, on an install without torch and transformers."""
    try:
        import moviellm_model.inference.loading  # noqa: F401 - imports torch and transformers
    except ImportError as error:
        raise ConfigError(f"{error.name or 'torch'} is not installed; inference needs the model extra: "
                          "pip install 'moviellm[model]'.") from None


def load(args: argparse.Namespace, progress: bool = True, compile: bool = True):
    """The model and processor named by the model options (torch is imported here)."""
    require_model_extra()
    from moviellm_model.inference.loading import load_model

    if not progress:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
    return load_model(args.model, revision=args.revision, dtype=args.dtype, device=args.device,
                      device_map=args.device_map, compile=compile)


def _arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    p.add_argument("--benchmark", required=True, metavar="NAME_OR_PATH",
                   help="A Hub dataset id (ORG/NAME) of a benchmark pushed with `moviellm push`, a packed benchmark "
                        "folder (builders/movie_qa_bench.py, builders/video_qa.py, `moviellm pull`), or a raw "
                        "benchmark folder as the builders read it (movies from `moviellm generate`, MovieLLM's "
                        "benchmark format, MSVD/MSRVTT/ActivityNet-QA or Video-ChatGPT files).")
    p.add_argument("--out", required=True, metavar="FILE",
                   help="predictions.jsonl to write: new, or the file of an earlier run of the same command, which is "
                        "continued with the unanswered questions only.")
    p.add_argument("--config", default=None,
                   choices=["from-movies", "movielm-format", "msvd_qa", "msrvtt_qa", "activitynet_qa", "video_chatgpt"],
                   help="Layout of a raw benchmark folder when it does not tell (test_qa.json is MSVD-QA's and "
                        "MSRVTT-QA's).")
    p.add_argument("--split", default=None, help="Answer only this split (e.g. generic). Default: every split.")
    p.add_argument("--benchmark-revision", default=None, help="Branch, tag or commit of a Hub benchmark.")
    p.add_argument("--legacy-pickle", action="store_true",
                   help="Read the original .pkl features of a MovieLLM-format folder. Pickle can run code: only for "
                        "files you trust.")
    add_generation_arguments(p, max_new_tokens=1024)
    p.add_argument("--batch-size", type=positive_int, default=8,
                   help="Questions about one video decoded together at most. Default: 8.")
    p.add_argument("--cache", choices=CACHES, default="auto",
                   help="KV cache of the batches that share a movie's prefix: shared (the prefix held and read once "
                        "for all questions), static (copied into every row, preallocated), dynamic (copied, grown), or "
                        "auto (shared). Preallocated caches get a compiled decoding step on a GPU. Default: auto.")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                   help="On a GPU, compile the decoder for the videos' prefills (about a minute once, then faster "
                        "prefills). Default: on.")
    p.add_argument("--limit", type=positive_int, default=None,
                   help="Answer only the first N questions of the benchmark (a quick check).")
    add_progress_option(p)


@verb("answer", "Answer every question of a benchmark with a LLaMA-VID model into predictions.jsonl (resumable).",
      _arguments)
def run_answer(args: argparse.Namespace) -> int:
    require_model_extra()
    from moviellm_model.inference.benchmarks import MOVIE_BENCHMARK, open_benchmark
    from moviellm_model.inference.predictions import PredictionsFile

    predictions = PredictionsFile(args.out)  # an unwritable --out fails before anything slow
    benchmark = open_benchmark(args.benchmark, config=args.config, split=args.split,
                               revision=args.benchmark_revision, legacy_pickle=args.legacy_pickle)
    settings = generation_settings(args, long_video=benchmark.name == MOVIE_BENCHMARK, max_new_tokens=1024)
    loaded = load(args, progress=not args.no_progress, compile=args.compile)
    from moviellm_model.inference.runner import answer_benchmark

    result = answer_benchmark(loaded, benchmark, predictions, settings, qformer_query=args.qformer_query,
                              batch_size=args.batch_size, limit=args.limit, cache_implementation=args.cache,
                              progress=not args.no_progress)
    print(f"{result.out}: {result.written} predictions written, {result.skipped} already there "
          f"({benchmark.name} from {benchmark.source}, {result.videos} videos encoded).")
    return 0
