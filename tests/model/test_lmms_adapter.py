"""The lmms-eval adapter (`python -m lmms_eval --model llamavid`), checked against lmms-eval itself when it is installed.

lmms-eval is an optional extra whose own requirements include torchvision, which this CPU stack must not install, so
these tests run where lmms-eval was installed without its dependencies plus what its evaluator imports (see README,
"Answer and chat"); elsewhere they are skipped with that reason.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch

from moviellm_model.inference import GenerationSettings, answer_questions, encode_frames, load_model
from moviellm_model.processing_llamavid import load_video_frames
from tests.publish.publish_support import write_video

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("lmms_eval") is None,
    reason="lmms-eval is not installed (optional extra `lmms`; it requires torchvision, so CI installs it without its "
           "dependencies in a side environment, see README 'Answer and chat')",
)

REPO = Path(__file__).resolve().parents[2]


def entry_point_folder(tmp_path: Path) -> Path:
    """A dist-info holding exactly the `lmms_eval.models` entry points pyproject.toml declares (what pip installs)."""
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]["lmms_eval.models"]
    info = tmp_path / "ep" / "moviellm_entry_points-0.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: moviellm-entry-points\nVersion: 0.0\n")
    (info / "entry_points.txt").write_text("[lmms_eval.models]\n" + "".join(f"{k} = {v}\n" for k, v in declared.items()))
    return info.parent


def run_python(code_or_args: list[str], tmp_path: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    path = os.pathsep.join([str(entry_point_folder(tmp_path)), str(REPO), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run([sys.executable, *code_or_args], capture_output=True, text=True, cwd=tmp_path, env=env,
                          timeout=timeout)


def test_lmms_eval_finds_llamavid_through_the_declared_entry_point(tmp_path):
    done = run_python(["-c", "from lmms_eval.models import get_model; cls = get_model('llamavid'); "
                             "print(cls.__module__, cls.__name__, cls.is_simple)"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-3:] == ["moviellm_model.inference.lmms_adapter", "LlamaVidLmms", "True"]


def _instance(request_type, arguments, doc_id, task="tiny"):
    from lmms_eval.api.instance import Instance

    return Instance(request_type=request_type, arguments=arguments, idx=0,
                    metadata={"task": task, "doc_id": doc_id, "repeats": 1})


def test_generate_until_and_loglikelihood_contract(saved_model_dir, tmp_path):
    from lmms_eval.api.model import lmms

    from moviellm_model.inference.lmms_adapter import LlamaVidLmms

    video = str(write_video(tmp_path / "clip.mp4", frames=4))
    docs = [{"video": video, "question": "what is the man doing?"}, {"video": video, "question": "who is there?"}]
    adapter = LlamaVidLmms.create_from_arg_string(f"pretrained={saved_model_dir},device=cpu,batch_size=2")
    assert isinstance(adapter, lmms)
    adapter.task_dict = {"tiny": {"test": docs}}
    gen_kwargs = {"until": ["ASSISTANT:"], "max_new_tokens": 8, "temperature": 0, "do_sample": False,
                  "image_aspect_ratio": "original"}
    requests = [_instance("generate_until", (doc["question"], gen_kwargs, lambda d: [d["video"]], i, "tiny", "test"), i)
                for i, doc in enumerate(docs)]
    outputs = adapter.generate_until(requests)
    loaded = load_model(str(saved_model_dir))
    encoded = encode_frames(loaded.model, loaded.processor, load_video_frames(video), long=False)
    expected = answer_questions(loaded.model, loaded.processor, encoded, [d["question"] for d in docs],
                                GenerationSettings(max_new_tokens=8), qformer_query="question")
    assert outputs == expected and all(outputs)

    scored = adapter.loglikelihood([
        _instance("loglikelihood", (docs[0]["question"], lambda d, text=text: text, lambda d: [d["video"]], 0, "tiny",
                                    "test"), 0)
        for text in (outputs[0], "zebra zebra zebra")
    ])
    (own, own_greedy), (other, other_greedy) = scored
    assert isinstance(own, float) and isinstance(own_greedy, bool)
    # (the tiny model's greedy tokens include byte pieces its decoded text drops, so `own` need not be greedy)
    assert other < own and other_greedy is False
    with pytest.raises(NotImplementedError):
        adapter.generate_until_multi_round([])
    assert torch.is_grad_enabled()


_TASK = """
task: tiny_videoqa
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_visual: !function utils.doc_to_visual
doc_to_text: !function utils.doc_to_text
doc_to_target: answer
process_results: !function utils.process_results
metric_list:
  - metric: exact
    aggregation: mean
    higher_is_better: true
generation_kwargs:
  until: ["ASSISTANT:"]
  max_new_tokens: 8
  temperature: 0
  do_sample: false
"""

_UTILS = """
def doc_to_visual(doc):
    return [doc["video"]]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["question"]


def process_results(doc, results):
    return {"exact": float(results[0].strip() == doc["answer"])}
"""


def test_python_m_lmms_eval_runs_a_task_on_llamavid(saved_model_dir, tmp_path):
    video = str(write_video(tmp_path / "clip.mp4", frames=4))
    docs = [{"video": video, "question": "what is the man doing?", "answer": "dance"},
            {"video": video, "question": "who opens the door?", "answer": "she"}]
    (tmp_path / "data.json").write_text(json.dumps(docs))
    tasks = tmp_path / "tasks" / "tiny"
    tasks.mkdir(parents=True)
    (tasks / "tiny_videoqa.yaml").write_text(_TASK.format(data=tmp_path / "data.json"))
    (tasks / "utils.py").write_text(_UTILS)
    done = run_python(["-m", "lmms_eval", "--model", "llamavid", "--model_args",
                       f"pretrained={saved_model_dir},device=cpu", "--tasks", "tiny_videoqa", "--include_path",
                       str(tmp_path / "tasks"), "--output_path", str(tmp_path / "out"), "--log_samples"], tmp_path)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    [samples] = list((tmp_path / "out").rglob("*samples_tiny_videoqa.jsonl"))
    predictions = [json.loads(line)["filtered_resps"] for line in samples.read_text().splitlines()]
    loaded = load_model(str(saved_model_dir))
    encoded = encode_frames(loaded.model, loaded.processor, load_video_frames(video), long=False)
    expected = answer_questions(loaded.model, loaded.processor, encoded, [d["question"] for d in docs],
                                GenerationSettings(max_new_tokens=8), qformer_query="question")
    assert predictions == expected
