"""Keyframe throughput: the reference recipe as DreamFrame runs it vs our DiffusionRenderer, one process.

Both render 1024 x 1024 keyframes with the real SDXL 1.0 base and refiner architectures (built from their
published configs, ``sdxl_configs.json``, with random weights: the arithmetic, and so the time, is that
of the trained models), the same 40-step Euler schedule, base until 0.75 then refiner, the same
guidance, negative prompt and seeds:

- reference: fp16, one image per call, base then refiner, VAE decoded by the pipeline (fp32 upcast), as
  in DreamFrame's generate.py (``moviellm_data/renderers/reference.py``);
- ours: ``DiffusionRenderer`` with the ``fast`` preset (fp16 UNets, many shots per call, fused QKV,
  channels-last, torch.compile of both UNets, measured-fastest SDPA kernel, bf16 VAE decode).

Printed: seconds per keyframe, keyframes per second, GPU-hours per reference-size movie (1,331 frames),
peak GPU memory, the compile time (paid once per process, reported apart), the time of one style-embedding
training with the reference schedule (400 optimizer steps x 2 micro-steps at 1024), and the speed-up last.

    python3 benchmarks/bench_render.py --record                  # H100: all of the above (~7 min)
    python3 benchmarks/bench_render.py --part render --record    # keyframes only
    python3 benchmarks/bench_render.py --part style --record     # style training only
    python3 benchmarks/bench_render.py --tiny                    # CPU smoke test of this script (seconds)
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from moviellm_data import __version__  # noqa: E402
from moviellm_data.renderers.diffusion import DiffusionRenderer  # noqa: E402
from moviellm_data.renderers.from_configs import TINY_SDXL, build_sdxl_pipelines  # noqa: E402
from moviellm_data.renderers.presets import DEFAULT_NEGATIVE_PROMPT, StyleTraining  # noqa: E402
from moviellm_data.renderers.frame_prompts import frame_prompt, frame_seed  # noqa: E402
from moviellm_data.renderers.reference import reference_keyframe  # noqa: E402
from moviellm_data.renderers.settings import RenderSettings  # noqa: E402
from moviellm_data.renderers.style import train_style_embedding  # noqa: E402
from moviellm_data.writers import MovieRequest, ProceduralWriter  # noqa: E402

HERE = Path(__file__).resolve().parent
REFERENCE_MOVIE_FRAMES = 1331
# From reference/dreamframe-pipeline.md (one H100, PyTorch 2.11): the UNets alone need 551 TFLOP per keyframe.
UNET_FLOOR_S = 0.69


def prompts_for(count: int) -> list[str]:
    """Realistic keyframe prompts: the shots of a reference-size procedural movie, names replaced."""
    script = ProceduralWriter("reference").write(MovieRequest(id="m000000_bench", index=0, theme="a love story", seed=1))
    shots = script.shots()
    return [frame_prompt(script, shots[i % len(shots)], script.style.keyword) for i in range(count)]


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def reset_peak(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gb(device: str) -> float:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else float("nan")


def run_reference(base, refiner, prompts, args) -> dict:
    """DreamFrame's loop: one frame per call, seed 20 + frame index."""
    settings = dict(steps=args.steps, switch=0.75, guidance_scale=5.0, width=args.size, height=args.size)
    reference_keyframe(base, refiner, prompts[0], DEFAULT_NEGATIVE_PROMPT, frame_seed("", 0, scheme="dreamframe"), **settings)
    sync(args.device)
    reset_peak(args.device)
    frames = []
    started = time.perf_counter()
    for i in range(args.reference_frames):
        frames.append(reference_keyframe(base, refiner, prompts[i], DEFAULT_NEGATIVE_PROMPT,
                                         frame_seed("", i, scheme="dreamframe"), **settings))
    sync(args.device)
    elapsed = time.perf_counter() - started
    return {"s_per_frame": elapsed / args.reference_frames, "frames": args.reference_frames,
            "peak_gb": peak_gb(args.device), "first": frames[0]}


def run_ours(renderer: DiffusionRenderer, prompts, args) -> dict:
    """Our renderer over the same pipelines: a first (compiling) batch, then timed batches."""
    batch = renderer.settings.batch_size
    seeds = [frame_seed("", i, scheme="dreamframe") for i in range(len(prompts))]
    started = time.perf_counter()
    renderer.load()
    first = renderer.render_prompts(prompts[:batch], seeds[:batch])
    sync(args.device)
    warmup_s = time.perf_counter() - started
    renderer.render_prompts(prompts[batch:2 * batch], seeds[batch:2 * batch])  # settle autotuning and caches
    sync(args.device)
    reset_peak(args.device)
    started = time.perf_counter()
    done = 0
    while done < args.frames:
        chunk = slice(done % len(prompts), done % len(prompts) + batch)
        done += len(renderer.render_prompts(prompts[chunk], seeds[chunk]))
    sync(args.device)
    elapsed = time.perf_counter() - started
    return {"s_per_frame": elapsed / done, "frames": done, "peak_gb": peak_gb(args.device), "warmup_s": warmup_s,
            "first": first[0], "attention": renderer.attention_used, "compiled": renderer._compiled}


def run_style(renderer: DiffusionRenderer, args) -> dict:
    """One style embedding: K style images (base only, batched) + textual inversion with the reference schedule."""
    training = StyleTraining() if args.style_steps is None else StyleTraining().with_total_steps(args.style_steps)
    prompts = [f"generate an image in Romantic style: {p}, warm golden light, pastel colours"
               for p in ("a park", "a kitchen", "a harbour", "a street", "a cafe", "a forest path", "a station", "a beach")]
    prompts = prompts[: training.images]
    sync(args.device)
    started = time.perf_counter()
    images = []
    for start in range(0, len(prompts), renderer.settings.batch_size):
        chunk = prompts[start:start + renderer.settings.batch_size]
        images += renderer.render_prompts(chunk, list(range(start, start + len(chunk))), refine=False)
    sync(args.device)
    images_s = time.perf_counter() - started
    reset_peak(args.device)
    started = time.perf_counter()
    train_style_embedding(renderer.pipeline, images, "Romantic", "<romantic-style>", training, seed=0,
                          gradient_checkpointing=args.gradient_checkpointing)
    sync(args.device)
    return {"images": len(images), "images_s": images_s, "train_s": time.perf_counter() - started,
            "optimizer_steps": training.total_steps, "micro_steps": training.total_steps * training.gradient_accumulation,
            "peak_gb": peak_gb(args.device)}


def machine(device: str) -> str:
    import diffusers
    import torch
    import transformers

    card = torch.cuda.get_device_name(0) if device.startswith("cuda") else f"CPU only, {platform.machine()}"
    return (f"{card}; Python {platform.python_version()}, torch {torch.__version__}, diffusers {diffusers.__version__}, "
            f"transformers {transformers.__version__}, moviellm {__version__}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="Tiny SDXL on CPU at 64x64 (checks the script, not the speed).")
    parser.add_argument("--part", choices=("all", "render", "style"), default="all")
    parser.add_argument("--device", default=None, help="Default: cuda (cpu with --tiny).")
    parser.add_argument("--size", type=int, default=None, help="Frame size. Default: 1024 (64 with --tiny).")
    parser.add_argument("--steps", type=int, default=None, help="Denoising steps. Default: 40 (4 with --tiny).")
    parser.add_argument("--reference-frames", type=int, default=None, help="Reference frames timed. Default: 3.")
    parser.add_argument("--frames", type=int, default=None, help="Our frames timed (after the first two batches). Default: 32.")
    parser.add_argument("--batch-size", type=int, default=None, help="Our shots per call. Default: 16 (4 with --tiny).")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None, help="Default: on (off with --tiny).")
    parser.add_argument("--compile-mode", default="default")
    parser.add_argument("--compile-vae", action="store_true", help="Also compile the VAE decoder.")
    parser.add_argument("--attention", default="auto", help="SDPA kernel for ours: auto, default, flash, cudnn, efficient.")
    parser.add_argument("--inductor-tuning", action="store_true",
                        help="Inductor coordinate-descent tuning of the generated kernels (longer compile, faster kernels).")
    parser.add_argument("--style-steps", type=int, default=None, help="Style optimizer steps. Default: 400, the reference schedule (2 with --tiny).")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--record", action="store_true", help="Append the result to benchmarks/RESULTS.md.")
    args = parser.parse_args()

    import torch

    tiny = args.tiny
    args.device = args.device or ("cpu" if tiny else "cuda")
    args.size = args.size or (64 if tiny else 1024)
    args.steps = args.steps or (4 if tiny else 40)
    args.reference_frames = args.reference_frames or (2 if tiny else 3)
    args.frames = args.frames or (8 if tiny else 32)
    args.batch_size = args.batch_size or (4 if tiny else 16)
    args.compile = (not tiny) if args.compile is None else args.compile
    if args.style_steps is None and tiny:
        args.style_steps = 2
    dtype = torch.float32 if tiny else torch.float16
    if args.inductor_tuning:
        import torch._inductor.config as inductor_config

        inductor_config.coordinate_descent_tuning = True
    configs = TINY_SDXL if tiny else json.loads((HERE / "sdxl_configs.json").read_text())

    started = time.perf_counter()
    base, refiner = build_sdxl_pipelines(configs, refiner=True, seed=0, device=args.device, dtype=dtype)
    for pipe in (base, refiner):
        pipe.set_progress_bar_config(disable=True)
    build_s = time.perf_counter() - started
    print(f"built SDXL base + refiner ({'tiny' if tiny else 'published configs, random weights'}) on {args.device} "
          f"in {build_s:.1f} s; {args.size}x{args.size}, {args.steps} steps, switch 0.75", flush=True)

    prompts = prompts_for(max(args.frames, 2 * args.batch_size, args.reference_frames))
    results: dict = {}
    if args.part in ("all", "render"):
        results["reference"] = run_reference(base, refiner, prompts, args)
        print(f"reference: {results['reference']['s_per_frame']:.3f} s/keyframe", flush=True)
    settings = RenderSettings(
        "sdxl-base-1.0 (random weights)", refiner="sdxl-refiner-1.0 (random weights)", preset="fast",
        width=args.size, height=args.size, steps=args.steps, batch_size=args.batch_size,
        dtype="float32" if tiny else "float16",
        # The style part alone renders one batch of style images: compiling for it would cost more than it saves.
        compile=args.compile and args.part != "style",
        compile_mode=args.compile_mode, compile_vae=args.compile_vae, attention=args.attention,
        device=args.device, style="none", negative_prompt=DEFAULT_NEGATIVE_PROMPT,
    )
    renderer = DiffusionRenderer(settings, pipeline=base, refiner_pipeline=refiner)
    if args.part in ("all", "render"):
        results["ours"] = run_ours(renderer, prompts, args)
        print(f"ours: {results['ours']['s_per_frame']:.3f} s/keyframe (first batch incl. compile "
              f"{results['ours']['warmup_s']:.1f} s, attention {results['ours']['attention']})", flush=True)
    if args.part in ("all", "style"):
        results["style"] = run_style(renderer, args)
        print(f"style: {results['style']['images_s']:.1f} s images + {results['style']['train_s']:.1f} s training", flush=True)
    report(results, args, tiny)


def report(results: dict, args, tiny: bool) -> None:
    lines = []
    if "reference" in results and "ours" in results:
        ref, ours = results["reference"], results["ours"]
        difference = np.abs(ref["first"].astype(int) - ours["first"].astype(int))
        lines += [
            "| recipe | s/keyframe | keyframes/s | GPU-hours per 1,331-frame movie | peak GB | frames timed |",
            "|---|---|---|---|---|---|",
        ]
        precision = "fp32 (tiny)" if tiny else "fp16, VAE fp32"
        for name, row in ((f"reference: DreamFrame, batch 1, {precision}", ref),
                          (f"ours: fast preset, batch {args.batch_size}, compile "
                           f"{args.compile_mode + (' + coordinate descent' if args.inductor_tuning else '') if ours['compiled'] else 'off'}, "
                           f"attention {ours['attention']}", ours)):
            lines.append(f"| {name} | {row['s_per_frame']:.3f} | {1 / row['s_per_frame']:.2f} | "
                         f"{row['s_per_frame'] * REFERENCE_MOVIE_FRAMES / 3600:.3f} | {row['peak_gb']:.1f} | {row['frames']} |")
        lines += [
            "",
            f"first batch of ours (load, compile, autotune; paid once per process): {ours['warmup_s']:.1f} s",
            f"same seed, frame 0, ours vs reference: max |diff| {difference.max()} / 255, mean {difference.mean():.3f}"
            + (" (random weights: informative only)" if not tiny else ""),
        ]
        if not tiny:
            lines.append(f"UNet floor from the reference measurement: {UNET_FLOOR_S} s/keyframe; ours is "
                         f"{ours['s_per_frame'] / UNET_FLOOR_S:.2f}x the floor")
    if "style" in results:
        style = results["style"]
        lines.append(
            f"style embedding, {'reference' if style['optimizer_steps'] == StyleTraining().total_steps else 'rescaled'} "
            f"schedule ({style['optimizer_steps']} optimizer steps = {style['micro_steps']} "
            f"single-image micro-steps at {args.size}x{args.size}, {style['images']} style images + flips): "
            f"{style['images_s']:.1f} s rendering the images + {style['train_s']:.1f} s training; peak {style['peak_gb']:.1f} GB"
        )
    if "reference" in results and "ours" in results:
        ratio = results["reference"]["s_per_frame"] / results["ours"]["s_per_frame"]
        lines.append(f"speed-up, ours vs reference keyframes per second: {ratio:.2f}x (target: 4x)")
    text = "\n".join(lines)
    print()
    print(text)
    if args.record:
        command = "python3 benchmarks/bench_render.py " + " ".join(sys.argv[1:])
        entry = (f"\n## bench_render — {datetime.now(timezone.utc).date().isoformat()}\n"
                 f"- machine: {machine(args.device)}\n- command: `{command.strip()}`\n"
                 f"- {'tiny SDXL (CPU smoke test)' if tiny else 'SDXL 1.0 base + refiner architectures from their published configs, random weights'}, "
                 f"{args.size}x{args.size}, {args.steps} Euler steps, base until 0.75 then refiner, guidance 5.0\n\n{text}\n")
        results_path = HERE / "RESULTS.md"
        if not results_path.exists():
            results_path.write_text("# Benchmark results\n\nEach entry: date, card, versions, command, figures. "
                                    "Appended by the scripts in this folder.\n", encoding="utf-8")
        with open(results_path, "a", encoding="utf-8") as fh:
            fh.write(entry)


if __name__ == "__main__":
    main()
