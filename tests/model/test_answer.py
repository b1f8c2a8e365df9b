"""`moviellm answer` and `moviellm chat` end to end: a tiny saved model, benchmarks made by the builders from tiny
movies made by `moviellm generate`, a kill and a rerun, the loopback Hub, bad input, the core install's --help."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from moviellm_data.builders.movie_qa_bench import pack_benchmark
from moviellm_data.builders.video_qa import pack_video_qa
from moviellm_data.cli import main
from moviellm_data.export import write_features
from moviellm_model.inference import GenerationSettings, answer_benchmark, answer_questions, encode_features
from moviellm_model.inference import load_model, open_benchmark
from moviellm_model.input_format import movie_qformer_text, render_vicuna_v1
from tests.hub.hub_server import FAKE_TOKEN, HubServer
from tests.publish.publish_support import make_movies, write_video
from tests.publish.test_builders import _raw_video_qa
from tests.test_generate import _cli_without

REPO = Path(__file__).resolve().parents[2]
_MAIN = "import sys; from moviellm_data.cli import main; sys.exit(main())"


def cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _MAIN, *args], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, **(env or {})}, timeout=timeout)


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def movies(tmp_path_factory) -> Path:
    """Three tiny offline movies (procedural writer, storyboard frames), as `moviellm generate` makes them."""
    return make_movies(tmp_path_factory.mktemp("answer") / "movies", movies=3)


@pytest.fixture(scope="module")
def bench(movies, tmp_path_factory) -> Path:
    """The long-video benchmark packed by the builder from those movies: 3 movies x 4 questions."""
    return pack_benchmark("from-movies", movies, tmp_path_factory.mktemp("answer") / "bench")


@pytest.fixture(scope="module")
def msvd(tmp_path_factory) -> Path:
    """MSVD-QA's raw layout (test_qa.json, an .avi and an .mp4 clip), as the builders' tests make it."""
    return _raw_video_qa(tmp_path_factory.mktemp("answer"))


def test_answer_writes_one_line_per_question_also_after_a_kill(saved_model_dir, bench, tmp_path):
    out = tmp_path / "predictions.jsonl"
    args = [sys.executable, "-c", _MAIN, "answer", "--model", str(saved_model_dir), "--benchmark", str(bench),
            "--out", str(out), "--max-new-tokens", "24", "--batch-size", "1", "--device", "cpu", "--no-progress"]
    process = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if out.exists() and out.read_bytes().count(b"\n") >= 2:
            break
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    written = lines(out)
    assert 2 <= len(written) < 12, f"killed after {len(written)} of 12 lines: the run must be cut mid-way"
    with open(out, "a", encoding="utf-8") as handle:
        handle.write('{"id": "cut mid-wr')  # as a kill during a write leaves it
    rerun = cli(*args[3:])
    assert rerun.returncode == 0, rerun.stderr
    assert "written" in rerun.stdout and f"{len(written)} already there" in rerun.stdout
    final = lines(out)
    assert final[: len(written)] == written, "earlier lines are kept as they were"
    ids = [line["id"] for line in final]
    entries = list(open_benchmark(str(bench)).videos())
    expected = [q.id for video in entries for q in video.questions]
    assert sorted(ids) == sorted(expected) and len(ids) == 12
    # the resumed file holds exactly the answers of one uninterrupted run (greedy decoding)
    loaded = load_model(str(saved_model_dir), device="cpu")
    fresh = tmp_path / "fresh.jsonl"
    answer_benchmark(loaded, open_benchmark(str(bench)), fresh, GenerationSettings(max_new_tokens=24), batch_size=1,
                     progress=False)
    by_id = {line["id"]: line for line in lines(fresh)}
    for line in final:
        assert line == by_id[line["id"]]
    again = cli(*args[3:])
    assert again.returncode == 0 and "0 predictions written, 12 already there" in again.stdout


def test_answer_line_format(saved_model_dir, bench, tmp_path):
    out = tmp_path / "p.jsonl"
    loaded = load_model(str(saved_model_dir))
    result = answer_benchmark(loaded, open_benchmark(str(bench)), out, GenerationSettings(max_new_tokens=4),
                              limit=5, progress=False)
    assert result.written == 5
    first = lines(out)[0]
    assert set(first) == {"id", "benchmark", "split", "video_id", "qa_type", "question", "answer", "prediction",
                          "question_2", "prediction_2", "model", "generation", "moviellm_version"}
    assert (first["benchmark"], first["split"], first["qa_type"]) == ("movie_qa_bench", "test", "overview")
    assert first["id"] == f"{first['video_id']}_0"
    assert first["model"] == {"name_or_path": str(saved_model_dir), "revision": None, "dtype": "float32"}
    assert first["generation"] == {"max_new_tokens": 4, "do_sample": False, "temperature": None, "top_p": None,
                                   "num_beams": 1, "seed": 0, "qformer_query": "moviellm",
                                   "prompt": "vicuna_v1+movie_wrapper"}
    assert [line["qa_type"] for line in lines(out)] == ["overview", "plot", "plot", "temporal", "overview"]
    with pytest.raises(Exception, match="another generation"):
        answer_benchmark(loaded, open_benchmark(str(bench)), out, GenerationSettings(max_new_tokens=5),
                         progress=False)


def test_raw_and_packed_short_video_benchmarks(saved_model_dir, msvd, tmp_path):
    loaded = load_model(str(saved_model_dir))
    settings = GenerationSettings(max_new_tokens=5)
    raw = answer_benchmark(loaded, open_benchmark(str(msvd)), tmp_path / "raw.jsonl", settings, progress=False)
    packed_dir = pack_video_qa("msvd_qa", msvd, tmp_path / "msvd-packed")
    packed = answer_benchmark(loaded, open_benchmark(str(packed_dir)), tmp_path / "packed.jsonl", settings,
                              progress=False)
    assert raw.written == packed.written == 3
    raw_lines, packed_lines = lines(tmp_path / "raw.jsonl"), lines(tmp_path / "packed.jsonl")
    assert [(x["id"], x["video_id"], x["answer"]) for x in raw_lines] == [("0", "vidA", "dance"), ("2", "vidA", "hat"),
                                                                          ("1", "vid-B", "woman")]
    assert all(x["benchmark"] == "msvd_qa" and x["generation"]["qformer_query"] == "question" for x in raw_lines)
    # the packed .avi is an mp4 re-encoding of its frames; the mp4 clip is packed as it is: the same answers
    assert [x["prediction"] for x in raw_lines if x["video_id"] == "vid-B"] == \
           [x["prediction"] for x in packed_lines if x["video_id"] == "vid-B"]
    # the consistency split: one line per question pair, both answered
    vcg = tmp_path / "vcg"
    vcg.mkdir()
    write_video(vcg / "clip1.mp4", frames=3)
    (vcg / "generic_qa.json").write_text(json.dumps([{"video_name": "clip1", "Q": "describe it", "A": "a clip"}]))
    (vcg / "temporal_qa.json").write_text(json.dumps([{"video_name": "clip1", "Q": "what first?", "A": "a"}]))
    (vcg / "consistency_qa.json").write_text(json.dumps([{"video_name": "clip1", "Q1": "what?", "Q2": "which?",
                                                           "A": "x"}]))
    answer_benchmark(loaded, open_benchmark(str(vcg)), tmp_path / "vcg.jsonl", settings, progress=False)
    by_split = {x["split"]: x for x in lines(tmp_path / "vcg.jsonl")}
    assert set(by_split) == {"generic", "temporal", "consistency"}
    assert by_split["consistency"]["question_2"] == "which?" and by_split["consistency"]["prediction_2"] is not None
    assert by_split["generic"]["prediction_2"] is None


def test_answer_from_a_hub_benchmark_and_a_hub_model(saved_model_dir, bench, tmp_path, monkeypatch):
    from huggingface_hub import HfApi

    from moviellm_data.hub import push_dataset

    with HubServer() as hub:
        monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
        push_dataset(bench, "org/bench", endpoint=hub.url)
        api = HfApi(endpoint=hub.url, token=FAKE_TOKEN)
        api.create_repo("org/tiny-llamavid")
        commit = api.upload_folder(folder_path=str(saved_model_dir), repo_id="org/tiny-llamavid")
        env = hub.env(tmp_path / "hf-home")
        out = tmp_path / "hub.jsonl"
        done = cli("answer", "--model", "org/tiny-llamavid", "--benchmark", "org/bench", "--out", str(out),
                   "--max-new-tokens", "4", "--limit", "4", "--no-progress", env=env)
        assert done.returncode == 0, done.stderr
        assert "4 predictions written" in done.stdout
        first = lines(out)[0]
        assert first["model"]["name_or_path"] == "org/tiny-llamavid"
        assert first["model"]["revision"] == commit.oid, "the commit the Hub served is recorded"
        missing = cli("answer", "--model", str(saved_model_dir), "--benchmark", "org/nothing-here", "--out",
                      str(tmp_path / "x.jsonl"), env=env)
        assert missing.returncode == 2 and "neither a local folder nor a dataset" in missing.stderr
        assert len(missing.stderr.strip().splitlines()) == 1


def test_chat_answers_from_a_short_mp4(saved_model_dir, tmp_path):
    video = write_video(tmp_path / "clip.mp4", frames=4)
    question = "what is the man doing?"
    done = cli("chat", "--model", str(saved_model_dir), "--video", str(video), "--max-new-tokens", "8", question)
    assert done.returncode == 0, done.stderr
    loaded = load_model(str(saved_model_dir))
    processor = loaded.processor
    prompt = render_vicuna_v1([{"role": "user", "content": "<image>\n" + question}])
    encoded = processor(text=prompt, videos=[str(video)], qformer_text=[question], return_tensors="pt")
    with torch.no_grad():
        out = loaded.model.generate(**encoded, max_new_tokens=8, do_sample=False, pad_token_id=0, eos_token_id=2)
    expected = processor.tokenizer.decode(out[0, encoded["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    assert expected and done.stdout.strip() == expected


def test_chat_from_exported_features(saved_model_dir, tmp_path):
    loaded = load_model(str(saved_model_dir))
    vision = loaded.model.config.vision_config
    feats = np.random.default_rng(3).normal(size=(5, vision.num_patches + 1, vision.hidden_size)).astype(np.float16)
    inputs = "<image><image> Hello there.<image><image><image> Bye."
    path = tmp_path / "movie.safetensors"
    write_features(path, feats, inputs, "movie", "tiny")  # what `moviellm export llamavid --model` writes
    question = "Who is the main character?"
    done = cli("chat", "--model", str(saved_model_dir), "--features", str(path), "--max-new-tokens", "8", question)
    assert done.returncode == 0, done.stderr
    video = encode_features(loaded.model, feats.astype(np.float32), inputs=inputs)
    [expected] = answer_questions(loaded.model, loaded.processor, video, [question],
                                  GenerationSettings(max_new_tokens=8), qformer_query="moviellm")
    assert expected and done.stdout.strip() == expected
    assert movie_qformer_text(question, "moviellm") != question


def _in_process(cases: list[list[str]]) -> list[tuple[int, str]]:
    """Run several command lines in this interpreter (torch is imported once): (exit code, stderr) each."""
    results = []
    for args in cases:
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            code = main(args)
        results.append((code, stderr.getvalue()))
    return results


def test_bad_input_is_one_sentence_and_exit_2(saved_model_dir, bench, tmp_path):
    a_file = tmp_path / "a_file.txt"
    a_file.write_text("x")
    out = str(tmp_path / "p.jsonl")
    model, benchmark = str(saved_model_dir), str(bench)
    cases = {
        "unknown benchmark": (["answer", "--model", model, "--benchmark", "msvd", "--out", out], "msvd is neither"),
        "missing benchmark folder": (["answer", "--model", model, "--benchmark", str(tmp_path / "nowhere") + "/x/y",
                                      "--out", out], "neither an existing folder"),
        "benchmark is a file": (["answer", "--model", model, "--benchmark", str(a_file), "--out", out], "is a file"),
        "not a benchmark folder": (["answer", "--model", model, "--benchmark", str(tmp_path), "--out", out],
                                   "neither a packed benchmark"),
        "missing model folder": (["answer", "--model", str(tmp_path / "no-model"), "--benchmark", benchmark, "--out",
                                  out], "does not exist"),
        "model is a file": (["answer", "--model", str(a_file), "--benchmark", benchmark, "--out", out], "is a file"),
        "unwritable out": (["answer", "--model", model, "--benchmark", benchmark, "--out", str(a_file / "p.jsonl")],
                           "cannot write"),
        "out is a folder": (["answer", "--model", model, "--benchmark", benchmark, "--out", str(tmp_path)], "folder"),
        "chat without video": (["chat", "--model", model, "--video", str(tmp_path / "none.mp4"), "hi"],
                               "does not exist"),
        "chat with a pickle": (["chat", "--model", model, "--features", str(_pickle(tmp_path)), "hi"], "pickle"),
        "chat with a broken file": (["chat", "--model", model, "--features", str(a_file), "hi"],
                                    "not a safetensors file"),
    }
    for name, (code, stderr) in zip(cases, _in_process([args for args, _ in cases.values()])):
        expected = cases[name][1]
        assert code == 2, (name, stderr)
        assert expected in stderr and len(stderr.strip().splitlines()) == 1, (name, stderr)
    assert not Path(out).exists(), "nothing is written when the input is refused"


def _pickle(folder: Path) -> Path:
    path = folder / "movie.pkl"
    path.write_bytes(b"\x80\x04K\x01.")  # never loaded
    return path


def test_help_of_answer_and_chat_on_the_core_install(tmp_path):
    blocked = ["torch", "transformers", "diffusers", "openai"]
    for verb in ("answer", "chat"):
        done = _cli_without(blocked, verb, "--help")
        assert done.returncode == 0 and "--model" in done.stdout, done.stderr
    done = _cli_without(blocked, "answer", "--model", "m", "--benchmark", "b", "--out", str(tmp_path / "p.jsonl"))
    assert done.returncode == 2 and "pip install 'moviellm[model]'" in done.stderr and "Traceback" not in done.stderr
