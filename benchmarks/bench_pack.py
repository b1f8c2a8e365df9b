"""Storage and read speed of our shards vs the reference layout, on reference-size storyboard movies.

Reference layout (what DreamFrame writes): one folder per movie with ``1.png ... N.png`` and a JSON
story file. Ours: one WebDataset sample per movie (``<id>.json`` + H.264 ``<id>.mp4``) in a tar shard.
Both hold the same frames of the same movies (rendered once, in this process). Reported: bytes per
movie, write time, and frames/s when reading every frame back into uint8 arrays; ratios last.

    python benchmarks/bench_pack.py                 # 2 reference movies (2 x 1,331 frames) at 384x256
    python benchmarks/bench_pack.py --movies 1 --size small --record   # quick; --record appends to RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from moviellm_data import __version__  # noqa: E402
from moviellm_data.renderers import StoryboardRenderer  # noqa: E402
from moviellm_data.shards import read_movies, write_shard  # noqa: E402
from moviellm_data.video import encode_mp4  # noqa: E402
from moviellm_data.writers import MovieRequest, ProceduralWriter  # noqa: E402


def write_reference(root: Path, script, frames: list[np.ndarray]) -> None:
    folder = root / script.id
    folder.mkdir(parents=True)
    for i, frame in enumerate(frames, start=1):
        Image.fromarray(frame).save(folder / f"{i}.png")
    (folder / "story_info.json").write_text(json.dumps(script.to_dreamframe_story()))


def read_reference(root: Path) -> int:
    frames = 0
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        json.loads((folder / "story_info.json").read_text())
        count = len(list(folder.glob("*.png")))
        stack = np.stack([np.asarray(Image.open(folder / f"{i}.png").convert("RGB")) for i in range(1, count + 1)])
        frames += len(stack)
    return frames


def folder_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--movies", type=int, default=2)
    parser.add_argument("--size", default="reference")
    parser.add_argument("--width", type=int, default=384)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--crf", type=int, default=18)
    parser.add_argument("--record", action="store_true", help="Append the result to benchmarks/RESULTS.md.")
    args = parser.parse_args()

    writer = ProceduralWriter(args.size)
    renderer = StoryboardRenderer(args.width, args.height)
    movies = []
    for i in range(args.movies):
        script = writer.write(MovieRequest(id=f"m{i:06d}_bench", index=i, theme="a detective story", seed=i))
        movies.append((script, list(renderer.render_frames(script))))
    total_frames = sum(len(f) for _, f in movies)

    work = Path(tempfile.mkdtemp(prefix="bench_pack_"))
    try:
        ref_root, our_root = work / "reference", work / "ours"
        our_root.mkdir()
        t0 = time.perf_counter()
        for script, frames in movies:
            write_reference(ref_root, script, frames)
        ref_write = time.perf_counter() - t0

        t0 = time.perf_counter()
        samples = [(s.id, {"json": s.to_json().encode(), "mp4": encode_mp4(f, crf=args.crf)}) for s, f in movies]
        write_shard(our_root / "movies-r0000-00000.tar", samples)
        our_write = time.perf_counter() - t0

        t0 = time.perf_counter()
        ref_read_frames = read_reference(ref_root)
        ref_read = time.perf_counter() - t0
        t0 = time.perf_counter()
        our_read_frames = sum(len(frames) for _, frames in read_movies(our_root))
        our_read = time.perf_counter() - t0
        assert ref_read_frames == our_read_frames == total_frames

        ref_bytes = folder_bytes(ref_root) / args.movies
        our_bytes = folder_bytes(our_root) / args.movies
    finally:
        shutil.rmtree(work)

    rows = [
        ("reference (PNG folder + JSON)", ref_bytes, ref_write, total_frames / ref_read),
        ("ours (WebDataset json + mp4)", our_bytes, our_write, total_frames / our_read),
    ]
    print(f"{args.movies} movie(s) x {total_frames // args.movies} frames at {args.width}x{args.height}, crf {args.crf}")
    print(f"{'layout':32s} {'MB/movie':>10s} {'write s':>9s} {'read frames/s':>14s}")
    for name, size, wtime, rate in rows:
        print(f"{name:32s} {size / 1e6:10.2f} {wtime:9.2f} {rate:14.0f}")
    size_ratio = ref_bytes / our_bytes
    read_ratio = rows[1][3] / rows[0][3]
    write_ratio = ref_write / our_write
    summary = f"bytes: reference/ours = {size_ratio:.1f}x smaller; read speed: ours/reference = {read_ratio:.2f}x; write speed: ours/reference = {write_ratio:.2f}x"
    print(summary)

    if args.record:
        results = Path(__file__).with_name("RESULTS.md")
        command = "python benchmarks/bench_pack.py " + " ".join(sys.argv[1:])
        entry = (
            f"\n## bench_pack — {datetime.now(timezone.utc):%Y-%m-%d}\n"
            f"- machine: CPU only, {platform.processor() or platform.machine()}, 2 cores (this project's dev machine); "
            f"Python {platform.python_version()}, moviellm {__version__}, numpy {np.__version__}\n"
            f"- command: `{command}`\n"
            f"- {args.movies} movie(s) x {total_frames // args.movies} frames at {args.width}x{args.height}, crf {args.crf}\n\n"
            f"| layout | MB/movie | write s | read frames/s |\n|---|---|---|---|\n"
            + "".join(f"| {n} | {s / 1e6:.2f} | {w:.2f} | {r:.0f} |\n" for n, s, w, r in rows)
            + f"\n{summary}\n"
        )
        if not results.exists():
            results.write_text("# Benchmark results\n\nEach entry: date, card, versions, command, figures. Appended by the scripts in this folder.\n")
        with open(results, "a") as fh:
            fh.write(entry)


if __name__ == "__main__":
    main()
