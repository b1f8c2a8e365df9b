"""Answers per second on the MovieLLM long-video protocol: the original's way vs a shared prefix, in one process.

The workload (issue 11): ten 2-hour movies given as exported EVA features (7,200 frames each, [T, 257, 1408] as
`moviellm export llamavid --model` writes them; random values), the protocol's 3 questions per movie (overview, a plot
question, the chronological sequence), 128 new tokens per answer (EOS suppressed so that every answer is exactly that
long), LLaMA-VID 7B with random weights in bf16, MovieLLM's fixed Q-Former text (what its published numbers used).

- Reference (MovieLLM's `run_llamavid_movie_answer.py`, llamavid-spec.md 5.2): for every question, the processor builds
  the movie prompt and the inputs, and plain `model.generate` (transformers' defaults: dynamic cache, eager) computes
  the movie's visual tokens, prefills the whole prompt and decodes: three full prefills per movie.
- Ours (`moviellm_model.inference.answer_questions`, what `moviellm answer` runs): the visual tokens and the shared
  prefix (system prompt, movie, subtitles) are computed and prefilled once per movie; the question suffixes are
  prefilled and decoded together over a `SharedPrefixCache` (the prefix held once, read once per decoding step for
  all three questions; `--cache static` copies it into every row instead). On CUDA with the speed options
  `moviellm answer` switches on (`fast_paths.enable_fast_inference`): 512-frame visual chunks, the decoder compiled
  for the prefill, one CUDA graph per decoding cache, cuDNN attention first.

Both arms start from the same features tensor per movie (reading the file from disk is the same for both and is not
timed); one untimed warm-up movie per arm (compilation, graph capture). Printed: answers/s of both, how many answers
agree, and the ratio LAST.

Usage:
    python3 benchmarks/bench_answer.py                      # on one H200: 7B sizes, 10 movies x 7,200 frames
    python3 benchmarks/bench_answer.py --tiny               # CPU smoke run in seconds
    ... --reference-movies 3                                # time the reference on fewer movies (same shapes)
    ... --record [--results PATH]                           # append the entry to benchmarks/RESULTS.md (or PATH)
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import transformers  # noqa: E402

from benchmarks._common import Peak, entry_header, parse_with_record_options, report, sync  # noqa: E402
from benchmarks._llamavid import build_config, build_model  # noqa: E402
from moviellm_model import LlamaVidImageProcessor, LlamaVidProcessor  # noqa: E402
from moviellm_model.fast_paths import enable_fast_inference  # noqa: E402
from moviellm_model.inference import (  # noqa: E402
    CACHE_IMPLEMENTATIONS,
    GenerationSettings,
    answer_questions,
    encode_features,
)
from moviellm_model.input_format import MOVIELLM_QFORMER_QUESTIONS, movie_inputs, movie_qformer_text  # noqa: E402
from moviellm_model.shared_prefix import PREFIX_KERNELS  # noqa: E402

TARGET = 6.0  # ours / reference answers per second (issue 11)
QUESTIONS = [MOVIELLM_QFORMER_QUESTIONS[0], "What does the main character want, and why?", MOVIELLM_QFORMER_QUESTIONS[1]]


def build_processor(tiny: bool, num_patches: int) -> LlamaVidProcessor:
    """A processor with a small locally trained Llama-style tokenizer and BERT vocabulary (no downloads): the ids are
    random-weight inputs, only their count matters for the timings."""
    from tests.model.conftest import build_bert_folder, build_llama_tokenizer, load_bert_tokenizer

    root = Path(tempfile.mkdtemp(prefix="bench_answer_"))
    size = 28 if tiny else 224
    return LlamaVidProcessor(
        image_processor=LlamaVidImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size}),
        tokenizer=transformers.AutoTokenizer.from_pretrained(build_llama_tokenizer(root / "llama")),
        qformer_tokenizer=load_bert_tokenizer(build_bert_folder(root / "bert")),
        num_patches=num_patches,
        compress_type="mean",
    )


def subtitles(frames: int) -> str:
    """One line per minute of movie, as Whisper transcripts of a quiet film would give."""
    lines = [" He says hello.", " She opens the door.", " They run to the station at night."]
    return movie_inputs(lines[(t // 60) % len(lines)] if t % 60 == 30 else "" for t in range(frames))


def movie_features(config, frames: int, index: int, device) -> torch.Tensor:
    """An exported movie: [T, 1 + P, C] float16, class token first (random, seeded by the movie's index)."""
    vision = config.vision_config
    generator = torch.Generator(device=device).manual_seed(1000 + index)
    return torch.randn(frames, vision.num_patches + 1, vision.hidden_size, generator=generator, device=device,
                       dtype=torch.float16)


def reference_movie(model, processor, feats, inputs, new_tokens) -> list[str]:
    """MovieLLM's answer script: per question, the processor's inputs and one plain `generate` (full prefill)."""
    answers = []
    for question in QUESTIONS:
        encoded = processor(text=processor.build_movie_prompt(question, inputs=inputs), video_features=[feats[:, 1:]],
                            qformer_text=[movie_qformer_text(question, "moviellm")], return_tensors="pt")
        encoded = encoded.to(model.device)
        encoded["video_features"] = encoded["video_features"].to(model.dtype)
        with torch.inference_mode():
            output = model.generate(**encoded, max_new_tokens=new_tokens, do_sample=False,
                                    pad_token_id=processor.tokenizer.pad_token_id,
                                    eos_token_id=processor.tokenizer.eos_token_id)
        answers.append(processor.tokenizer.decode(output[0, encoded["input_ids"].shape[1]:],
                                                  skip_special_tokens=True).strip())
    return answers


def ours_movie(model, processor, feats, inputs, new_tokens, cache="auto", prefix_kernel="auto") -> list[str]:
    video = encode_features(model, feats, inputs=inputs)
    return answer_questions(model, processor, video, QUESTIONS, GenerationSettings(max_new_tokens=new_tokens),
                            qformer_query="moviellm", batch_size=len(QUESTIONS), cache_implementation=cache,
                            prefix_kernel=prefix_kernel)


def phases(model, processor, feats, inputs, new_tokens, cache, prefix_kernel) -> dict[str, float]:
    """Where one movie's time goes in ours, each part synchronised: the prompts' tokenisation, the visual tokens, the
    prefill of the shared prefix (the same ids as `answer_questions` prefills), the whole movie with one new token
    per question (the difference: `generate`'s set-up and the questions' prefill), and with all the new tokens (the
    difference: the batched decoding; the cache's shapes are those of the 1-token movie, so nothing compiles)."""
    from moviellm_model.inference.answering import (
        _common_prefix,
        _embed,
        _placeholder_groups,
        _visual_tokens,
        question_prompt,
    )

    device = model.device
    times = {}
    video = encode_features(model, feats, inputs=inputs)
    encoded = processor.encode_qformer_text([movie_qformer_text(QUESTIONS[0], "moviellm")], return_tensors="pt")
    with torch.inference_mode():
        for _ in range(2):  # the second is timed
            begin = time.perf_counter()
            groups = _placeholder_groups(processor, video)
            rows = [processor.tokenize_with_placeholders(question_prompt(processor, video, q), groups)
                    for q in QUESTIONS]
            prefix = _common_prefix(rows)
            times["tokenising the 3 prompts (CPU)"] = time.perf_counter() - begin
            begin = time.perf_counter()
            tokens = _visual_tokens(model, video, encoded["qformer_input_ids"].to(device),
                                    encoded["qformer_attention_mask"].to(device))
            sync(device)
            times["visual tokens (Q-Former over every frame)"] = time.perf_counter() - begin
            begin = time.perf_counter()
            output = model(inputs_embeds=_embed(model, torch.tensor([rows[0][:prefix]], device=device), [tokens]),
                           use_cache=True, logits_to_keep=1)
            sync(device)
            times[f"prefill of the shared prefix ({prefix:,} tokens)"] = time.perf_counter() - begin
            del output, tokens
    for tokens in (1, 1, new_tokens):  # the first is a warm-up for the new answer length
        begin = time.perf_counter()
        ours_movie(model, processor, feats, inputs, tokens, cache, prefix_kernel)
        sync(device)
        times[tokens] = time.perf_counter() - begin
    one, whole = times.pop(1), times.pop(new_tokens)
    times["generate's set-up, the questions' prefill and first token (the rest of a 1-token movie)"] = (
        one - sum(times.values()))
    times[f"decoding the {len(QUESTIONS)} questions together ({new_tokens - 1} more steps, "
          f"{(whole - one) / (new_tokens - 1) * 1e3:.2f} ms each)"] = whole - one
    times["whole movie"] = whole
    return times


def run(args) -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    config = build_config(args.tiny)
    processor = build_processor(args.tiny, config.vision_config.num_patches)
    # the processor's placeholder ids; the text vocabulary must hold the tokenizer's ids
    config.image_token_index, config.video_token_index = processor.image_token_id, processor.video_token_id
    config.text_config.vocab_size = max(config.text_config.vocab_size, len(processor.tokenizer) + 2)
    model = build_model(config, device, dtype)
    config = model.config
    # every answer is exactly `new_tokens` long in both arms: random weights would stop at a random EOS
    model.generation_config.suppress_tokens = [processor.tokenizer.eos_token_id]
    inputs = subtitles(args.frames)
    length = len(processor.tokenize_with_placeholders(
        processor.build_movie_prompt(QUESTIONS[0], inputs=inputs),
        [[processor.video_token_id] * config.tokens_per_frame] * args.frames))
    results = {"device": device, "length": length, "notes": []}

    def timed_arm(label, answer_movie, movies):
        answer_movie(model, processor, movie_features(config, args.frames, -1, device), inputs, args.new_tokens)
        sync(device)  # warm-up movie: cuBLAS/cuDNN set-up, compilation, graph capture
        answers = []
        with Peak(device) as peak:
            for index in range(movies):
                feats = movie_features(config, args.frames, index, device)
                sync(device)
                begin = time.perf_counter()
                answers.append(answer_movie(model, processor, feats, inputs, args.new_tokens))
                sync(device)
                results.setdefault(f"{label} per movie", []).append(time.perf_counter() - begin)
                del feats
            total = sum(results[f"{label} per movie"])
        results[label] = (movies * len(QUESTIONS) / total, total, peak.gib)
        print(f"{label} per movie: " + ", ".join(f"{seconds:.2f}" for seconds in results[f"{label} per movie"]))
        print(f"{label}: {movies} movies in {total:.2f} s ({total / movies:.2f} s per movie), peak {peak.gib:.1f} GiB",
              flush=True)
        return answers

    reference = timed_arm("reference", reference_movie, args.reference_movies)
    enable_fast_inference(model)  # what `moviellm answer` switches on (CUDA only)

    def ours_arm(model, processor, feats, inputs, new_tokens):
        return ours_movie(model, processor, feats, inputs, new_tokens, args.cache, args.prefix_kernel)

    ours = timed_arm("ours", ours_arm, args.movies)
    if args.phases:
        feats = movie_features(config, args.frames, -2, device)
        times = phases(model, processor, feats, inputs, args.new_tokens, args.cache, args.prefix_kernel)
        results["notes"].append("where ours spends one movie (synchronised phases, one more movie): "
                                + "; ".join(f"{name} {seconds:.3f} s" for name, seconds in times.items()))
    if args.cache in ("auto", "shared"):
        results["notes"].append(f"prefix kernel: {args.prefix_kernel} ({_resolved_prefix_kernel(model, dtype)})")
    pairs = [(r, o) for movie_r, movie_o in zip(reference, ours) for r, o in zip(movie_r, movie_o)]
    same = sum(r == o for r, o in pairs)
    results["notes"].append(f"answers identical in both arms: {same} of {len(pairs)} (greedy, {str(dtype)[6:]}; random "
                            "weights, so rounding differences between the two paths' kernels can change a token)")
    return results


def _resolved_prefix_kernel(model, dtype) -> str:
    """What the "auto" prefix kernel is on this machine, with Triton's version when it is Triton."""
    from moviellm_model.prefix_attention_kernel import prefix_attention_available

    text = model.config.text_config
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    probe = torch.empty(1, 1, 1, head_dim, device=model.device, dtype=dtype)
    if prefix_attention_available(probe):
        import triton

        return f"Triton split-KV kernel available, triton {triton.__version__}"
    return "Triton kernel not available here"


def render(results, args) -> str:
    ref_rate, ref_total, ref_peak = results["reference"]
    ours_rate, ours_total, ours_peak = results["ours"]
    size = "tiny model, CPU" if args.tiny else "LLaMA-VID 7B with random weights, bf16"
    card = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU only, {platform.machine()}"
    lines = entry_header("bench_answer", card, args.argv) + [
        f"- {size}; {args.frames:,} frames per movie ({results['length']:,} prompt tokens), {len(QUESTIONS)} questions "
        f"per movie, {args.new_tokens} new tokens per answer; MovieLLM's fixed Q-Former text",
        "",
        "| arm | movies | answers | seconds | answers/s | s per movie | peak GiB |",
        "|---|---|---|---|---|---|---|",
        f"| reference: per question, processor + plain generate (full prefill) | {args.reference_movies} | "
        f"{args.reference_movies * len(QUESTIONS)} | {ref_total:.2f} | {ref_rate:.3f} | "
        f"{ref_total / args.reference_movies:.2f} | {ref_peak:.1f} |",
        f"| ours: shared prefix prefilled once, questions decoded as one batch (cache: {args.cache}, prefix kernel: {args.prefix_kernel}) | {args.movies} | "
        f"{args.movies * len(QUESTIONS)} | {ours_total:.2f} | {ours_rate:.3f} | {ours_total / args.movies:.2f} | "
        f"{ours_peak:.1f} |",
        "",
    ]
    lines += [f"- note: {note}" for note in results["notes"]]
    ratio = ours_rate / ref_rate
    verdict = "" if args.tiny else f" (target >= {TARGET:.0f}x: {'met' if ratio >= TARGET else 'NOT met'})"
    lines += ["", f"ratio (ours vs reference): {ratio:.2f}x answers/s{verdict}"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny model on CPU (seconds); a smoke test of this script")
    parser.add_argument("--cpu", action="store_true", help="run on CPU even if a GPU is present")
    parser.add_argument("--movies", type=int, default=10, help="movies answered by ours (default 10)")
    parser.add_argument("--reference-movies", type=int, help="movies answered by the reference (default: --movies)")
    parser.add_argument("--frames", type=int, help="frames per movie (default 7,200 = 2 hours at 1 fps; tiny: 64)")
    parser.add_argument("--new-tokens", type=int, help="new tokens per answer (default 128; tiny: 8)")
    parser.add_argument("--cache", choices=CACHE_IMPLEMENTATIONS, default="auto",
                        help="ours' cache for the questions' batch (default auto: the shared prefix)")
    parser.add_argument("--prefix-kernel", choices=PREFIX_KERNELS, default="auto",
                        help="with the shared cache: the kernel of the attention over the prefix (default auto)")
    parser.add_argument("--phases", action="store_true", help="also time the phases of one more movie of ours")
    args = parse_with_record_options(parser, argv)
    args.frames = args.frames or (64 if args.tiny else 7200)
    args.new_tokens = args.new_tokens or (8 if args.tiny else 128)
    args.reference_movies = args.reference_movies or args.movies
    if args.tiny:
        args.cpu = True
        args.movies = min(args.movies, 3)
        args.reference_movies = min(args.reference_movies, 3)
    entry = render(run(args), args)
    report(entry, args.record, args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
