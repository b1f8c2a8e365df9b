"""Helpers of the evaluation tests: predictions files in the `moviellm answer` format and a scripted judge.

The judge is the loopback OpenAI-compatible server (tests/llm/fake_openai.py) with a responder that
recognises which of our judge prompts a request carries (by its system message), reads the fields of
the user message (Question:, Predicted answer:, ...) and answers from a table the test writes, so every
score is known in advance and the test can compute the expected numbers by hand.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from moviellm_model.evaluation.judges import _JUDGES, load_judge
from tests.llm.fake_openai import FakeOpenAI, Scripted

REPO = Path(__file__).resolve().parents[2]
SECRET = "sk-proj-EVALjudge0secret0key0Qw8Er4Ty6Ui2"
_FIELD = re.compile(r"^([A-Z][A-Za-z0-9 ]*): (.*)$", re.MULTILINE)
_SYSTEMS = {name: load_judge(name).system for name in _JUDGES}

# `python -m moviellm_data.cli` would run cli.py as __main__, a second copy of the verb registry.
MAIN = "import sys; from moviellm_data.cli import main; sys.exit(main())"
# The same with torch and transformers made unimportable: evaluation must not need them.
MAIN_WITHOUT_TORCH = ("import sys; sys.modules['torch'] = None; sys.modules['transformers'] = None; "
                      "from moviellm_data.cli import main; rc = main(); "
                      "assert 'torch' not in [m for m, v in sys.modules.items() if v is not None]; sys.exit(rc)")


def prediction(id_: str, benchmark: str, question: str, answer: str, pred: str, *, split: str = "test",
               qa_type: str = "", video_id: str | None = None, question_2: str | None = None,
               prediction_2: str | None = None, model: str = "org/llamavid-tiny") -> dict:
    """One line of predictions.jsonl as `moviellm answer` writes it."""
    return {"id": id_, "benchmark": benchmark, "split": split, "video_id": video_id or id_.split("_")[0],
            "qa_type": qa_type, "question": question, "answer": answer, "prediction": pred,
            "question_2": question_2, "prediction_2": prediction_2,
            "model": {"name_or_path": model, "revision": None, "dtype": "float32"},
            "generation": {"do_sample": False, "temperature": 0.0, "max_new_tokens": 64, "seed": 0},
            "moviellm_version": "0.1.0"}


def write_predictions(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def judge_of(request: dict) -> str | None:
    system = next((m["content"] for m in request.get("messages", []) if m.get("role") == "system"), "")
    return next((name for name, text in _SYSTEMS.items() if system.startswith(text)), None)


def fields_of(request: dict) -> dict[str, str]:
    user = next((m["content"] for m in request.get("messages", []) if m.get("role") == "user"), "")
    return dict(_FIELD.findall(user))


def scripted_judge(decide: Callable[[str, dict[str, str]], dict | str]) -> Callable[[dict], Scripted | None]:
    """A FakeOpenAI responder: ``decide(judge name, fields)`` gives the answer.

    Faults match on level = the judge's name and theme = the answer being judged ("Predicted answer",
    "Answer", "Answer to question 1" or "First answer"), so a test can break the judgement of one item.
    """

    def respond(request: dict) -> Scripted | None:
        name = judge_of(request)
        if name is None:
            return None
        fields = fields_of(request)
        theme = (fields.get("Predicted answer") or fields.get("Answer to question 1") or fields.get("First answer")
                 or fields.get("Answer"))
        return Scripted(decide(name, fields), level=name, theme=theme)

    return respond


def judge_server(decide, **kwargs) -> FakeOpenAI:
    return FakeOpenAI(api_key=SECRET, responder=scripted_judge(decide), **kwargs)


def eval_args(server: FakeOpenAI, predictions: Path, protocol: str, out: Path, *extra: str) -> list[str]:
    return ["eval", "--predictions", str(predictions), "--protocol", protocol, "--out", str(out),
            "--judge-model", "judge-model", "--judge-base-url", server.url, "--no-progress",
            "--judge-backoff", "0.01", "--judge-retries", "2", *extra]


def run_cli(args: list[str], main: str = MAIN, env: dict | None = None, timeout: float = 120):
    return subprocess.run([sys.executable, "-c", main, *args], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})}, timeout=timeout)


def all_files(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def assert_no_secret(texts: dict[str, str | bytes], secret: str = SECRET, width: int = 8) -> None:
    """No text holds the secret or any ``width``-character piece of it."""
    pieces = [secret[i:i + width] for i in range(len(secret) - width + 1)]
    for where, text in texts.items():
        data = text.encode() if isinstance(text, str) else text
        for piece in pieces:
            assert piece.encode() not in data, f"a piece of the API key is in {where}"
