"""``moviellm eval``: judge a predictions file with the LLaMA-VID, Video-ChatGPT or MovieLLM protocol.

The options of the judge (``--judge-model``, ``--judge-base-url``, ``--concurrency``, ``--max-cost``, ...)
are the chat-client options every LLM user of moviellm shares (:mod:`moviellm_data.llm.options`). Only
argparse work happens at import time: ``moviellm eval --help`` needs neither openai nor torch.
"""

from __future__ import annotations

import argparse
import sys

from ..cli import verb
from ..llm.options import ChatRole, add_chat_arguments, chat_cache_path, chat_settings_from_args
from ..options import add_progress_option

PROTOCOL_NAMES = ("msvd-qa", "msrvtt-qa", "activitynet-qa", "vcgbench", "movie-compare", "movie-score")
JUDGE = ChatRole(prefix="judge", needed_by="moviellm eval",
                 unfinished="calls not sent are reported unjudged and a rerun continues from the cache",
                 recorded_in="results.json", cache_name="judge-cache.sqlite", temperature=0.0, max_tokens=1024,
                 batch_unit="All judge calls of a run go into one batch.")


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--predictions", required=True, metavar="FILE",
                   help="predictions.jsonl written by `moviellm answer` (one JSON object per answered question).")
    p.add_argument("--protocol", required=True, choices=PROTOCOL_NAMES,
                   help="msvd-qa, msrvtt-qa, activitynet-qa: the open-ended QA judge (yes/no and a 0-5 score: "
                        "accuracy and mean score). vcgbench: the Video-ChatGPT benchmark's five 0-5 dimensions "
                        "(correctness, detail, context on the generic split; temporal; consistency). movie-compare: "
                        "MovieLLM's pairwise long-video judge against --baseline (compare ratio and mean score per "
                        "overview, plot, temporal). movie-score: each long-video answer scored alone (0-5).")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="Report folder: results.json, results.md, a chart per run, judgements; the judge cache in "
                        "DIR/.moviellm/. Several runs (protocols, models) can share one folder.")
    p.add_argument("--baseline", metavar="FILE",
                   help="movie-compare: the other model's predictions.jsonl, joined with --predictions on id.")
    p.add_argument("--both-orders", action="store_true",
                   help="movie-compare: judge every pair twice, each answer shown first once; a pair counts half a "
                        "win per order won and scores are averaged over both positions, which cancels the judge's "
                        "position bias (twice the calls).")
    p.add_argument("--judge-attempts", type=int, default=2, metavar="N",
                   help="Times one judgement is asked from scratch when the judge refuses, or its answer stays "
                        "unparseable or cut off after the repair rounds; then it is reported unjudged. Default: 2.")
    p.add_argument("--model-card", metavar="MODEL_DIR",
                   help="A saved model folder: its README.md model-index gets these results (written from the "
                        "card template if absent), so `moviellm push MODEL_DIR` shows them on the Hub.")
    p.add_argument("--dataset-id", metavar="ORG/NAME",
                   help="The benchmark's Hub dataset id for the model-index. Default: the benchmark's name.")
    add_progress_option(p)
    add_chat_arguments(p.add_argument_group("judge model"), JUDGE)


@verb("eval", "Judge predictions with an LLM (open-ended QA, Video-ChatGPT, MovieLLM long-video): cached, resumable.",
      _arguments)
def run_eval(args: argparse.Namespace) -> int:
    from moviellm_model.evaluation import evaluate

    from ..pipeline import command_line

    settings = chat_settings_from_args(args, JUDGE)
    report = evaluate(args.predictions, args.protocol, settings, args.out, baseline=args.baseline,
                      both_orders=args.both_orders, cache_path=chat_cache_path(args, JUDGE, args.out),
                      attempts=args.judge_attempts, progress=not args.no_progress, model_card=args.model_card,
                      dataset_id=args.dataset_id, command=command_line(args.argv))
    run = report.run
    print(f"{run['title']}, {run['model_label']}" + (f" vs {run['baseline_label']}" if run["baseline"] else "")
          + f": {_summary(run)}")
    counts = run["counts"]
    print(f"judged {counts['judged']} of {counts['calls']} calls ({run['usage']['cached']} from the cache); "
          f"judge usage: {run['usage']['requests']} requests, cost "
          + ("unknown" if run["usage"]["cost_usd"] is None else f"${run['usage']['cost_usd']:.4f}")
          + f"; reports in {report.out}/results.json and results.md"
          + (f", chart {report.chart.name}" if report.chart else "")
          + (f"; model card {report.model_card}" if report.model_card else "") + ".")
    if counts["unjudged"]:
        kinds = ", ".join(f"{k} {n}" for k, n in counts["unjudged_by_kind"].items())
        print(f"{counts['unjudged']} calls unjudged ({kinds}); they are listed in results.json and left out of "
              "every number; run the same command again to retry them.", file=sys.stderr)
        return 1
    return 0


def _summary(run: dict) -> str:
    m = run["metrics"]

    def num(v, fmt="{:.3f}"):
        return "-" if v is None else fmt.format(v)

    if run["protocol"] in ("msvd-qa", "msrvtt-qa", "activitynet-qa"):
        row = m[run["benchmark"]]
        return f"accuracy {num(row['accuracy'] and 100 * row['accuracy'], '{:.1f}%')}, score {num(row['score'])}"
    if run["protocol"] == "movie-compare":
        return "; ".join(f"{k}: ratio {num(v['compare_ratio']['model'])} / {num(v['compare_ratio']['baseline'])}, "
                         f"score {num(v['score']['model'])} / {num(v['score']['baseline'])}" for k, v in m.items())
    return ", ".join(f"{k} {num(v['score'])}" for k, v in m.items())
