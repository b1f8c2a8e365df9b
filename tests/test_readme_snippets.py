"""Issue 12: the README's quick start and every Python snippet it does not mark as needing an extra run as written on
the quick start's install (`pip install -e .`: no torch, no torchcodec, no openai), after its first command."""

from __future__ import annotations

import re

from .core_install import REPO, core_python

#: How a snippet says it needs more than the core install (its first line is such a comment).
NEEDS_MORE = re.compile(r"^# needs the \w+ extra")


def _snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(encoding="utf-8"), flags=re.DOTALL)


def test_the_snippets_that_need_more_say_so():
    marked = [s.splitlines()[0] for s in _snippets() if NEEDS_MORE.match(s)]
    assert len(marked) >= 4, marked  # model, inference, eval, score: each names its extra
    for snippet in _snippets():
        if any(name in snippet for name in ("moviellm_model.evaluation", "AutoModelForImageTextToText",
                                            "moviellm_data.scoring", "moviellm_model.inference")):
            assert NEEDS_MORE.match(snippet), snippet.splitlines()[0]


def test_the_quick_start_and_the_core_snippets_run_as_written(tmp_path):
    step_one = core_python("import sys\nfrom moviellm_data.cli import main\n"
                           "sys.exit(main(['generate', '--movies', '4', '--out', 'movies', '--no-progress']))",
                           tmp_path)
    assert step_one.returncode == 0 and "wrote 4 movies" in step_one.stdout, step_one.stderr
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_DATASETS_CACHE": str(tmp_path / "hf" / "datasets")}
    ran = 0
    for snippet in _snippets():
        if NEEDS_MORE.match(snippet):
            continue
        done = core_python(snippet, tmp_path, env=env)
        assert done.returncode == 0, (snippet.splitlines()[0], done.stderr[-2000:])
        ran += 1
    assert ran >= 4  # the quick start's readers, the builder, the Python API, the diffusers settings
