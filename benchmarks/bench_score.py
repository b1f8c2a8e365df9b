"""Keyframes scored per second by `moviellm score` (CLIP ViT-L/14 sizes, random weights) vs the plain transformers way.

The workload: a dataset folder of storyboard movies at 1024 x 1024 (real H.264 mp4s in real shards, `--movies` x
`--frames-per-movie` keyframes), scored with a CLIP of ViT-L/14 sizes (text 12 x 768, vision 24 x 1024 at 224 px,
patch 14, projection 768; random weights time like trained ones; a local byte-level tokenizer, prompts truncated at
77 tokens as CLIP-T does):

- reference: what one writes with transformers alone: decode a movie's frames, `CLIPProcessor(images=..., text=...)`
  (resizing on the CPU), `CLIPModel(**inputs)` in fp16 on the GPU, one batch at a time, cosine per keyframe;
- ours: `moviellm_data.scoring` as `moviellm score` runs it: decoding in a background thread (FFmpeg threads), resize /
  crop / normalise on the GPU, fp16, CLIP-T plus character and style consistency from the same forward pass, written
  to `scores.jsonl` / `scores.json`.

Model loading is outside the timings; each arm scores one movie untimed first (warm-up). Printed: keyframes/s of
both (and of ours with a second, DINOv2-base-sized consistency model with `--dinov2`), the GPU-only rate of our
embedding (frames already decoded), and LAST the ratio ours / reference and the cost of scoring as a share of
rendering at `--render-seconds-per-keyframe` (the fastest preset's figure from `bench_render.py`). Target (issue 14):
scoring under 5% of rendering with the fastest preset.

    python3 benchmarks/bench_score.py --render-seconds-per-keyframe S --record   # H200 (~3 min)
    python3 benchmarks/bench_score.py --tiny                                      # CPU smoke test (seconds)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks._common import entry_header, machine_card, parse_with_record_options, report, sync  # noqa: E402
from moviellm_data.pipeline import GenerateOptions, generate  # noqa: E402
from moviellm_data.renderers import StoryboardRenderer  # noqa: E402
from moviellm_data.renderers.frame_prompts import replace_names  # noqa: E402
from moviellm_data.scoring import ScoreSettings, Scorer, score_dataset  # noqa: E402
from moviellm_data.scoring.from_configs import CLIP_VIT_L14, DINOV2_BASE, save_clip, save_dinov2  # noqa: E402
from moviellm_data.scoring.run import iter_movie_samples  # noqa: E402
from moviellm_data.video import decode_mp4  # noqa: E402
from moviellm_data.writers import ProceduralWriter  # noqa: E402

TARGET_SHARE = 0.05  # scoring time / rendering time with the fastest preset (issue 14)


def save_models(root: Path, tiny: bool, dinov2: bool) -> tuple[Path, Path | None]:
    """CLIP (and DINOv2) folders with random weights and the image processors of the published checkpoints."""
    side = 64 if tiny else 224
    clip = save_clip(root / "clip", None if tiny else CLIP_VIT_L14, image_size=side)
    if not dinov2:
        return clip, None
    return clip, save_dinov2(root / "dinov2", None if tiny else DINOV2_BASE, image_size=side, resize=None if tiny else 256)


def make_movies(root: Path, movies: int, size: str, side: int) -> Path:
    out = root / "movies"
    generate(GenerateOptions(out=out, movies=movies, seed=5), ProceduralWriter(size), StoryboardRenderer(side, side),
             progress=False)
    return out


def run_reference(folder: Path, clip: Path, device: torch.device, batch_size: int) -> dict:
    """transformers alone: decode, CLIPProcessor on the CPU, CLIPModel in fp16, a batch at a time."""
    from PIL import Image
    from transformers import CLIPModel, CLIPProcessor

    dtype = torch.float16 if device.type == "cuda" else torch.float32
    model = CLIPModel.from_pretrained(str(clip), dtype=dtype).to(device).eval()
    processor = CLIPProcessor.from_pretrained(str(clip))
    samples = list(iter_movie_samples(folder))

    def score(script, mp4) -> list[float]:
        frames = decode_mp4(mp4)
        texts = [replace_names(shot.prompt, script.characters) for shot in script.shots()]
        values = []
        for start in range(0, len(frames), batch_size):
            inputs = processor(images=[Image.fromarray(f) for f in frames[start:start + batch_size]],
                               text=texts[start:start + batch_size], return_tensors="pt", padding=True,
                               truncation=True, max_length=77).to(device)
            inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
            with torch.inference_mode():
                out = model(**inputs)
            image = out.image_embeds / out.image_embeds.norm(dim=-1, keepdim=True)
            text = out.text_embeds / out.text_embeds.norm(dim=-1, keepdim=True)
            values += (image * text).sum(-1).float().cpu().tolist()
        return values

    score(samples[0][0], samples[0][1])  # warm-up
    sync(device)
    started = time.perf_counter()
    frames = 0
    for script, mp4, _, _ in samples:
        frames += len(score(script, mp4))
    sync(device)
    return {"keyframes_per_s": frames / (time.perf_counter() - started), "keyframes": frames}


def run_ours(folder: Path, settings: ScoreSettings, device: torch.device) -> dict:
    """`moviellm score`'s path: the warm-up movie scored untimed, then the whole folder from scratch."""
    scorer = Scorer(settings).load()
    script, mp4, portraits, source = next(iter_movie_samples(folder))
    scorer.score_movie(script, mp4, portraits, source)  # warm-up (cuDNN / kernel selection)
    sync(device)
    started = time.perf_counter()
    summary = score_dataset(folder, progress=False, rescore=True, scorer=scorer)
    sync(device)
    elapsed = time.perf_counter() - started
    return {"keyframes_per_s": summary["keyframes"] / elapsed, "keyframes": summary["keyframes"], "scorer": scorer,
            "clip_t": summary["metrics"]["clip_t"]["mean"]}


def gpu_only(scorer: Scorer, folder: Path, device: torch.device) -> float:
    """Keyframes/s of our embedding alone: frames decoded beforehand, CLIP (and the consistency model) timed."""
    _, mp4, _, _ = next(iter_movie_samples(folder))
    frames = list(decode_mp4(mp4))
    scorer.clip.embed_frames(frames)
    sync(device)
    started = time.perf_counter()
    scorer.clip.embed_frames(frames)
    if scorer.consistency is not scorer.clip:
        scorer.consistency.embed_frames(frames)
    sync(device)
    return len(frames) / (time.perf_counter() - started)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="Tiny CLIP, 64 x 64 movies, CPU (checks the script).")
    parser.add_argument("--device", default=None, help="Default: cuda (cpu with --tiny).")
    parser.add_argument("--movies", type=int, default=None, help="Movies scored. Default: 4 (2 with --tiny).")
    parser.add_argument("--size", default=None, help="Movie size ACTSxSCENESxSHOTS. Default: 4x8x8 = 256 keyframes "
                                                     "(1x2x3 with --tiny).")
    parser.add_argument("--batch-size", type=int, default=64, help="Keyframes per forward pass. Default: 64.")
    parser.add_argument("--dinov2", action="store_true", help="Also time ours with a DINOv2-base-sized consistency model.")
    parser.add_argument("--render-seconds-per-keyframe", type=float, default=None,
                        help="The fastest preset's s/keyframe from bench_render.py, to state scoring's share of it.")
    args = parse_with_record_options(parser, argv)
    tiny = args.tiny
    device = torch.device(args.device or ("cpu" if tiny else "cuda"))
    root = Path(tempfile.mkdtemp(prefix="bench_score_"))
    clip, dino = save_models(root, tiny, args.dinov2)
    side = 64 if tiny else 1024
    folder = make_movies(root, args.movies or (2 if tiny else 4), args.size or ("1x2x3" if tiny else "4x8x8"), side)
    print(f"{args.movies or (2 if tiny else 4)} storyboard movies at {side}x{side} in {folder}", flush=True)

    reference = run_reference(folder, clip, device, args.batch_size)
    print(f"reference: {reference['keyframes_per_s']:.1f} keyframes/s", flush=True)
    ours = run_ours(folder, ScoreSettings(clip_model=str(clip), batch_size=args.batch_size, device=str(device)), device)
    print(f"ours: {ours['keyframes_per_s']:.1f} keyframes/s", flush=True)
    gpu_rate = gpu_only(ours["scorer"], folder, device)
    rows = [("reference: transformers CLIPProcessor + CLIPModel, batch " + str(args.batch_size), reference),
            ("ours: moviellm score (CLIP-T + CLIP-I + style), batch " + str(args.batch_size), ours)]
    if dino is not None:
        with_dino = run_ours(folder, ScoreSettings(clip_model=str(clip), consistency_model=str(dino),
                                                   batch_size=args.batch_size, device=str(device)), device)
        rows.append(("ours with a DINOv2-base-sized consistency model", with_dino))

    lines = entry_header("bench_score", machine_card(device), args.argv)
    lines += [f"- CLIP {'tiny' if tiny else 'ViT-L/14 sizes'} (random weights), {reference['keyframes']} storyboard "
              f"keyframes at {side}x{side} in H.264 shards, batch {args.batch_size}", "",
              "| arm | keyframes/s | keyframes |", "|---|---|---|"]
    lines += [f"| {label} | {row['keyframes_per_s']:.1f} | {row['keyframes']} |" for label, row in rows]
    lines += ["", f"ours, embedding alone (frames decoded beforehand): {gpu_rate:.1f} keyframes/s"]
    ratio = ours["keyframes_per_s"] / reference["keyframes_per_s"]
    last = f"ratio ours / reference keyframes per second: {ratio:.2f}x"
    slowest_ours = min(row["keyframes_per_s"] for _, row in rows[1:])  # the costlier of our configurations
    if args.render_seconds_per_keyframe:
        share = (1 / slowest_ours) / args.render_seconds_per_keyframe
        last += (f"; scoring costs {100 * share:.1f}% of rendering at {args.render_seconds_per_keyframe:.3f} s/keyframe "
                 f"(target < {100 * TARGET_SHARE:.0f}%: {'met' if share < TARGET_SHARE else 'NOT met'})")
    else:
        last += (f"; under {100 * TARGET_SHARE:.0f}% of rendering for any preset slower than "
                 f"{1 / (slowest_ours * TARGET_SHARE):.3f} s/keyframe (pass --render-seconds-per-keyframe to check one)")
    report("\n".join(lines) + "\n\n" + last + "\n", args.record, args.results)


if __name__ == "__main__":
    main()
