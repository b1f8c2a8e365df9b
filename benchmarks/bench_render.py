"""Keyframe throughput of every preset beside DreamFrame's reference recipe, in one process.

All arms render 1024 x 1024 keyframes with the real SDXL 1.0 base and refiner architectures (built from their
published configs, ``sdxl_configs.json``, with random weights: the arithmetic, and so the time, is that of the
trained models), the same prompts, negative prompt and seeds:

- reference: DreamFrame's loop (``moviellm_data/renderers/reference.py``): fp16, one image per call, 40 Euler steps,
  base until 0.75 then refiner, VAE decoded by the pipeline (fp32 upcast);
- fast: ``DiffusionRenderer`` with the ``fast`` preset, the same recipe batched and compiled (fp16 UNets, fused QKV,
  channels-last, ``torch.compile`` of both UNets, measured-fastest SDPA kernel, bf16 VAE decode);
- solver: the ``solver`` preset, DPM-Solver++ (2M, Karras sigmas) in 24 steps with the same base/refiner split,
  computed like fast;
- few-step: the ``few-step`` preset, distilled weights of one kind (default ``lightning``: Euler, trailing timesteps,
  4 steps, guidance off, base model only) computed like fast. The weights are a LoRA with a zero up-projection
  written here in diffusers' format and loaded through the real path (fused, then unloaded): the UNet that runs is
  the base architecture unchanged, which is what every published SDXL distillation (LoRA or whole UNet) runs.

Printed per preset: seconds per keyframe, keyframes per second, GPU-hours per reference-size movie (1,331 frames),
peak GPU memory, the first batch's time (load, compile, autotune; paid once per process, reported apart); then the
time of one style-embedding training with the reference schedule (400 optimizer steps x 2 micro-steps at 1024);
the speed-ups over the reference LAST. Target (issue 14): a preset at or under 0.10 GPU-hours per movie.

    python3 benchmarks/bench_render.py --part render --record    # H200: every preset (~15 min, compiles included)
    python3 benchmarks/bench_render.py --part render --presets reference few-step --record
    python3 benchmarks/bench_render.py --part style --record     # style training only
    python3 benchmarks/bench_render.py --tiny                    # CPU smoke test of this script (seconds)
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from moviellm_data import __version__  # noqa: E402
from moviellm_data.renderers.diffusion import DiffusionRenderer  # noqa: E402
from moviellm_data.renderers.frame_prompts import frame_prompt, frame_seed  # noqa: E402
from moviellm_data.renderers.from_configs import TINY_SDXL, build_sdxl_pipelines  # noqa: E402
from moviellm_data.renderers.presets import DEFAULT_NEGATIVE_PROMPT, StyleTraining  # noqa: E402
from moviellm_data.renderers.reference import reference_keyframe  # noqa: E402
from moviellm_data.renderers.settings import DISTILLED_KINDS, DistilledWeights, RenderSettings  # noqa: E402
from moviellm_data.renderers.style import train_style_embedding  # noqa: E402
from moviellm_data.writers import MovieRequest, ProceduralWriter  # noqa: E402

HERE = Path(__file__).resolve().parent
REFERENCE_MOVIE_FRAMES = 1331
TARGET_GPU_HOURS = 0.10  # per 1,331-frame movie, for at least one preset (issue 14)
# From reference/dreamframe-pipeline.md (one H100, PyTorch 2.11): the UNets alone need 551 TFLOP per keyframe.
UNET_FLOOR_S = 0.69
PRESETS = ("reference", "fast", "solver", "few-step")


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


def zero_lora(unet, folder: Path, rank: int = 8) -> Path:
    """A LoRA on the UNet's attention projections with zero up-projections, saved as diffusers saves LoRAs.

    Loading it runs the whole distilled-weights path (peft layers, fuse, unload) and leaves the UNet's function (and
    so the timing of every later arm) unchanged.
    """
    import torch
    from diffusers import StableDiffusionXLPipeline

    layers = {}
    for name, module in unet.named_modules():
        if name.endswith((".to_q", ".to_k", ".to_v", ".to_out.0")) and isinstance(module, torch.nn.Linear):
            layers[f"{name}.lora.down.weight"] = torch.randn(rank, module.in_features) * 0.01
            layers[f"{name}.lora.up.weight"] = torch.zeros(module.out_features, rank)
    StableDiffusionXLPipeline.save_lora_weights(str(folder), unet_lora_layers=layers)
    return folder


def run_reference(base, refiner, prompts, args) -> dict:
    """DreamFrame's loop: one frame per call, seed 20 + frame index."""
    settings = dict(steps=args.steps, switch=0.75, guidance_scale=5.0, width=args.size, height=args.size)
    started = time.perf_counter()
    reference_keyframe(base, refiner, prompts[0], DEFAULT_NEGATIVE_PROMPT, frame_seed("", 0, scheme="dreamframe"), **settings)
    sync(args.device)
    warmup_s = time.perf_counter() - started
    reset_peak(args.device)
    frames = []
    started = time.perf_counter()
    for i in range(args.reference_frames):
        frames.append(reference_keyframe(base, refiner, prompts[i], DEFAULT_NEGATIVE_PROMPT,
                                         frame_seed("", i, scheme="dreamframe"), **settings))
    sync(args.device)
    elapsed = time.perf_counter() - started
    return {"s_per_frame": elapsed / args.reference_frames, "frames": args.reference_frames, "warmup_s": warmup_s,
            "peak_gb": peak_gb(args.device), "first": frames[0], "label": "DreamFrame, batch 1, "
            + ("fp32 (tiny)" if args.tiny else "fp16, VAE fp32") + f", {args.steps} Euler steps, refiner at 0.75"}


def run_ours(renderer: DiffusionRenderer, prompts, args) -> dict:
    """A renderer over the shared pipelines: a first (compiling) batch, a settling batch, then timed batches."""
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
    s = renderer.settings
    compiled = f"compile {args.compile_mode}" if renderer._compiled else "no compile"
    label = (f"batch {batch}, {s.steps} steps ({s.sampler} sampler), guidance {s.guidance_scale:g}, "
             f"{'refiner at ' + str(renderer.refiner_switch) if renderer.refiner else 'base only'}, {compiled}, "
             f"attention {renderer.attention_used}")
    return {"s_per_frame": elapsed / done, "frames": done, "peak_gb": peak_gb(args.device), "warmup_s": warmup_s,
            "first": first[0], "label": label, "compiled": renderer._compiled}


def preset_renderer(preset: str, base, refiner, args, weights_dir: Path) -> DiffusionRenderer:
    """The renderer of one preset over the shared pipelines (the benchmark's sizes and speed options)."""
    few_step = preset == "few-step"
    distilled = None
    if few_step:
        distilled = DistilledWeights(str(zero_lora(base.unet, weights_dir / "zero-lora")), args.few_step_kind)
    steps = {"fast": args.steps, "solver": args.solver_steps, "few-step": args.few_step_steps}[preset]
    settings = RenderSettings(
        "sdxl-base-1.0 (random weights)", refiner="none" if few_step else "sdxl-refiner-1.0 (random weights)",
        preset=preset, width=args.size, height=args.size, steps=steps, batch_size=args.batch_size,
        dtype="float32" if args.tiny else "float16", compile=args.compile, compile_mode=args.compile_mode,
        compile_vae=args.compile_vae, attention=args.attention, device=args.device, style="none",
        negative_prompt=DEFAULT_NEGATIVE_PROMPT, distilled=distilled,
    )
    return DiffusionRenderer(settings, pipeline=base, refiner_pipeline=None if few_step else refiner)


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


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="Tiny SDXL on CPU at 64x64 (checks the script, not the speed).")
    parser.add_argument("--part", choices=("all", "render", "style"), default="all")
    parser.add_argument("--presets", nargs="+", choices=PRESETS, default=list(PRESETS), help="Arms of the render part.")
    parser.add_argument("--device", default=None, help="Default: cuda (cpu with --tiny).")
    parser.add_argument("--size", type=int, default=None, help="Frame size. Default: 1024 (64 with --tiny).")
    parser.add_argument("--steps", type=int, default=None, help="Reference and fast steps. Default: 40 (4 with --tiny).")
    parser.add_argument("--solver-steps", type=int, default=None, help="Solver preset steps. Default: 24 (4 with --tiny).")
    parser.add_argument("--few-step-kind", choices=sorted(DISTILLED_KINDS), default="lightning",
                        help="Distilled kind of the few-step arm (decides sampler, steps, guidance). Default: lightning.")
    parser.add_argument("--few-step-steps", type=int, default=None, help="Default: the kind's (lightning: 4).")
    parser.add_argument("--reference-frames", type=int, default=None, help="Reference frames timed. Default: 3.")
    parser.add_argument("--frames", type=int, default=None, help="Frames timed per preset (after two batches). Default: 32.")
    parser.add_argument("--batch-size", type=int, default=None, help="Shots per call of the presets. Default: 16 (4 with --tiny).")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None, help="Default: on (off with --tiny).")
    parser.add_argument("--compile-mode", default="default")
    parser.add_argument("--compile-vae", action="store_true", help="Also compile the VAE decoder.")
    parser.add_argument("--attention", default="auto", help="SDPA kernel of the presets: auto, default, flash, cudnn, efficient.")
    parser.add_argument("--inductor-tuning", action="store_true",
                        help="Inductor coordinate-descent tuning of the generated kernels (longer compile, faster kernels).")
    parser.add_argument("--style-steps", type=int, default=None, help="Style optimizer steps. Default: 400, the reference schedule (2 with --tiny).")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--record", action="store_true", help="Append the result to benchmarks/RESULTS.md.")
    args = parser.parse_args(argv)
    tiny = args.tiny
    args.device = args.device or ("cpu" if tiny else "cuda")
    args.size = args.size or (64 if tiny else 1024)
    args.steps = args.steps or (4 if tiny else 40)
    args.solver_steps = args.solver_steps or (4 if tiny else 24)
    args.reference_frames = args.reference_frames or (2 if tiny else 3)
    args.frames = args.frames or (8 if tiny else 32)
    args.batch_size = args.batch_size or (4 if tiny else 16)
    args.compile = (not tiny) if args.compile is None else args.compile
    if args.style_steps is None and tiny:
        args.style_steps = 2
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    import torch

    if args.inductor_tuning:
        import torch._inductor.config as inductor_config

        inductor_config.coordinate_descent_tuning = True
    configs = TINY_SDXL if args.tiny else json.loads((HERE / "sdxl_configs.json").read_text())
    started = time.perf_counter()
    base, refiner = build_sdxl_pipelines(configs, refiner=True, seed=0, device=args.device,
                                         dtype=torch.float32 if args.tiny else torch.float16)
    for pipe in (base, refiner):
        pipe.set_progress_bar_config(disable=True)
    print(f"built SDXL base + refiner ({'tiny' if args.tiny else 'published configs, random weights'}) on {args.device} "
          f"in {time.perf_counter() - started:.1f} s; {args.size}x{args.size}", flush=True)

    prompts = prompts_for(max(args.frames, 2 * args.batch_size, args.reference_frames))
    results: dict = {}
    weights_dir = Path(tempfile.mkdtemp(prefix="bench_render_"))
    if args.part in ("all", "render"):
        # The reference runs first, on pipelines no renderer has touched; the presets share them after it (each
        # renderer works on its own copies of the pipelines with its own scheduler; the UNets are shared). few-step
        # comes next: its weights are loaded (and fused) before any arm has compiled or fused the shared UNet, as
        # they are in a real run.
        for preset in sorted(args.presets, key=("reference", "few-step", "solver", "fast").index):
            if preset == "reference":
                results[preset] = run_reference(base, refiner, prompts, args)
            else:
                results[preset] = run_ours(preset_renderer(preset, base, refiner, args, weights_dir), prompts, args)
            row = results[preset]
            print(f"{preset}: {row['s_per_frame']:.3f} s/keyframe ({row['label']}; first batch {row['warmup_s']:.1f} s)",
                  flush=True)
    if args.part in ("all", "style"):
        renderer = DiffusionRenderer(RenderSettings(
            "sdxl-base-1.0 (random weights)", refiner="sdxl-refiner-1.0 (random weights)", preset="fast",
            width=args.size, height=args.size, steps=args.steps, batch_size=args.batch_size,
            dtype="float32" if args.tiny else "float16", compile=False, attention=args.attention, device=args.device,
            style="none"), pipeline=base, refiner_pipeline=refiner)
        results["style"] = run_style(renderer, args)
        print(f"style: {results['style']['images_s']:.1f} s images + {results['style']['train_s']:.1f} s training", flush=True)
    report(results, args)


def render_lines(results: dict, args) -> list[str]:
    arms = [p for p in PRESETS if p in results]
    if not arms:
        return []
    lines = ["| preset | recipe and execution | s/keyframe | keyframes/s | GPU-hours per 1,331-frame movie | "
             "peak GB | first batch s | frames timed |", "|---|---|---|---|---|---|---|---|"]
    for name in arms:
        row = results[name]
        lines.append(f"| {name} | {row['label']} | {row['s_per_frame']:.3f} | {1 / row['s_per_frame']:.2f} | "
                     f"{row['s_per_frame'] * REFERENCE_MOVIE_FRAMES / 3600:.3f} | {row['peak_gb']:.1f} | "
                     f"{row['warmup_s']:.1f} | {row['frames']} |")
    lines.append("")
    if "reference" in results and "fast" in results:
        difference = np.abs(results["reference"]["first"].astype(int) - results["fast"]["first"].astype(int))
        lines.append(f"same seed, frame 0, fast vs reference: max |diff| {difference.max()} / 255, mean "
                     f"{difference.mean():.3f}" + ("" if args.tiny else " (random weights: informative only)"))
    if "fast" in results and not args.tiny:
        lines.append(f"UNet floor from the reference measurement: {UNET_FLOOR_S} s/keyframe; fast is "
                     f"{results['fast']['s_per_frame'] / UNET_FLOOR_S:.2f}x the floor")
    hours = {name: results[name]["s_per_frame"] * REFERENCE_MOVIE_FRAMES / 3600 for name in arms}
    best = min(hours, key=hours.get)
    lines.append(f"cheapest preset: {best}, {hours[best]:.3f} GPU-hours per movie (target <= {TARGET_GPU_HOURS:.2f}: "
                 f"{'met' if hours[best] <= TARGET_GPU_HOURS else 'NOT met'})")
    return lines


def report(results: dict, args) -> None:
    lines = render_lines(results, args)
    if "style" in results:
        style = results["style"]
        lines.append(
            f"style embedding, {'reference' if style['optimizer_steps'] == StyleTraining().total_steps else 'rescaled'} "
            f"schedule ({style['optimizer_steps']} optimizer steps = {style['micro_steps']} "
            f"single-image micro-steps at {args.size}x{args.size}, {style['images']} style images + flips): "
            f"{style['images_s']:.1f} s rendering the images + {style['train_s']:.1f} s training; peak {style['peak_gb']:.1f} GB"
        )
    if "reference" in results:
        ratios = ", ".join(f"{name} {results['reference']['s_per_frame'] / results[name]['s_per_frame']:.2f}x"
                           for name in PRESETS if name in results and name != "reference")
        if ratios:
            lines.append(f"speed-up vs the reference, keyframes per second: {ratios} "
                         f"(target: a preset at <= {TARGET_GPU_HOURS:.2f} GPU-hours per movie)")
    text = "\n".join(lines)
    print()
    print(text)
    if args.record:
        command = "python3 benchmarks/bench_render.py " + " ".join(sys.argv[1:])
        entry = (f"\n## bench_render — {datetime.now(timezone.utc).date().isoformat()}\n"
                 f"- machine: {machine(args.device)}\n- command: `{command.strip()}`\n"
                 f"- {'tiny SDXL (CPU smoke test)' if args.tiny else 'SDXL 1.0 base + refiner architectures from their published configs, random weights'}, "
                 f"{args.size}x{args.size}, guidance 5.0 (few-step: its kind's), DreamFrame's negative prompt\n\n{text}\n")
        results_path = HERE / "RESULTS.md"
        if not results_path.exists():
            results_path.write_text("# Benchmark results\n\nEach entry: date, card, versions, command, figures. "
                                    "Appended by the scripts in this folder.\n", encoding="utf-8")
        with open(results_path, "a", encoding="utf-8") as fh:
            fh.write(entry)


if __name__ == "__main__":
    main()
