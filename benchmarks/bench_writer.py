"""LLM writer throughput: our concurrent writer vs one request at a time (what the reference does).

Both arms write the same tiny movies (2 acts x 2 scenes x 3 shots: 8 chat requests each) with the same
client against the same loopback OpenAI-compatible server (tests/llm/fake_openai.py), which adds a fixed
latency to every request, as a remote API does. Each arm starts with an empty answer cache, so every
answer is really requested. Checked: every movie is a valid script, and the writer's request and
token counts equal what the server counted. Reported: wall time, requests/s, tokens; the ratio last.

    python benchmarks/bench_writer.py                       # 50 movies, 200 ms latency, concurrency 64
    python benchmarks/bench_writer.py --movies 5 --latency 0.05   # quick look
    python benchmarks/bench_writer.py --record              # append the result to benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from moviellm_data import __version__  # noqa: E402
from moviellm_data.llm.client import ChatSettings  # noqa: E402
from moviellm_data.llm.cost import price_for  # noqa: E402
from moviellm_data.llm.retry import RetryPolicy  # noqa: E402
from moviellm_data.pipeline import plan_requests  # noqa: E402
from moviellm_data.script import MovieScript  # noqa: E402
from moviellm_data.writers.llm_writer import LLMWriter  # noqa: E402
from tests.llm.fake_openai import FakeOpenAI  # noqa: E402

MODEL = "gpt-4o-mini"  # priced in the built-in table, so the cost column is filled


def run_arm(server: FakeOpenAI, movies: int, size: str, concurrency: int, movies_in_flight: int | None) -> dict:
    """Write ``movies`` movies with a fresh cache; return timings and counts checked against the server."""
    server.reset_counts()
    settings = ChatSettings(model=MODEL, base_url=server.url, api_key=server.api_key, concurrency=concurrency,
                            price=price_for(MODEL), retry=RetryPolicy(max_retries=3, backoff_base=0.05))
    with tempfile.TemporaryDirectory() as tmp:
        writer = LLMWriter(settings, size=size, cache_path=Path(tmp) / "cache.sqlite",
                           movies_in_flight=movies_in_flight)
        requests = plan_requests(movies, 0, None)
        started = time.perf_counter()
        results = list(writer.write_many(requests))
        wall = time.perf_counter() - started
    scripts = [r for r in results if isinstance(r, MovieScript)]
    if len(scripts) != movies:
        failed = [r for r in results if not isinstance(r, MovieScript)]
        raise SystemExit(f"{len(failed)} movies failed, e.g. {failed[0].reason}")
    usage, totals = writer.usage, server.totals
    tokens_match = (usage.requests == totals.requests and usage.prompt_tokens == totals.prompt_tokens
                    and usage.completion_tokens == totals.completion_tokens)
    if not tokens_match:
        raise SystemExit(f"token accounting differs from the server: ours {usage}, server {totals}")
    return {"concurrency": concurrency, "movies": len(scripts), "requests": usage.requests, "wall": wall,
            "rps": usage.requests / wall, "prompt": usage.prompt_tokens, "completion": usage.completion_tokens,
            "cost": usage.cost, "max_in_flight": totals.max_in_flight, "tokens_match": tokens_match}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--movies", type=int, default=50)
    parser.add_argument("--size", default="tiny", help="Movie size (default tiny: 2x2x3, 8 requests per movie).")
    parser.add_argument("--latency", type=float, default=0.2, help="Seconds the server adds to every request.")
    parser.add_argument("--concurrency", type=int, default=64, help="Requests in flight for our writer.")
    parser.add_argument("--min-ratio", type=float, default=20.0, help="Exit 1 when the speed-up is below this.")
    parser.add_argument("--record", action="store_true", help="Append the result to benchmarks/RESULTS.md.")
    args = parser.parse_args()

    with FakeOpenAI(latency=args.latency) as server:
        # Warm-up: imports, first connection, schema generation; not timed.
        run_arm(server, 1, args.size, 1, 1)
        ours = run_arm(server, args.movies, args.size, args.concurrency, None)
        reference = run_arm(server, args.movies, args.size, 1, 1)
    ratio = reference["wall"] / ours["wall"]

    header = "| writer | in flight | movies | requests | wall s | requests/s | prompt tok | completion tok | cost $ | tokens = server |"
    rows = [
        ("reference: one request at a time", reference),
        (f"ours: asyncio, concurrency {args.concurrency}", ours),
    ]
    lines = [header, "|" + "---|" * 10]
    for name, r in rows:
        lines.append(f"| {name} | {r['max_in_flight']} | {r['movies']} | {r['requests']} | {r['wall']:.2f} | "
                     f"{r['rps']:.1f} | {r['prompt']} | {r['completion']} | {r['cost']:.4f} | {r['tokens_match']} |")
    summary = (f"speed-up, ours vs one request at a time: {ratio:.1f}x "
               f"({args.movies} {args.size} movies, {args.latency * 1000:.0f} ms added latency per request)")
    print("\n".join(lines))
    print(summary)

    if args.record:
        command = "python benchmarks/bench_writer.py " + " ".join(sys.argv[1:])
        versions = ", ".join(f"{name} {metadata.version(name)}" for name in ("openai", "httpx2", "pydantic"))
        entry = [
            "",
            f"## bench_writer — {datetime.now(timezone.utc).date().isoformat()}",
            f"- machine: CPU only, {platform.machine()}, loopback server in the same process (2-core dev machine); "
            f"Python {platform.python_version()}, moviellm {__version__}, {versions}",
            f"- command: `{command.strip()}`",
            f"- {args.movies} movies of size {args.size}, {args.latency * 1000:.0f} ms added per request; model name "
            f"{MODEL} (cost column from the built-in price table and the server's token counts)",
            "",
            *lines,
            "",
            summary,
        ]
        results = Path(__file__).with_name("RESULTS.md")
        if not results.exists():
            results.write_text("# Benchmark results\n\nEach entry: date, card, versions, command, figures. "
                               "Appended by the scripts in this folder.\n", encoding="utf-8")
        with open(results, "a", encoding="utf-8") as fh:
            fh.write("\n".join(entry) + "\n")
    return 0 if ratio >= args.min_ratio else 1


if __name__ == "__main__":
    sys.exit(main())
