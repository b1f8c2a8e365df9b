"""Issue 12, the command line: help on the core install, bounded options, operating-system failures as sentences.

Each test runs what a newcomer or an attacker ran (a fresh interpreter, the core install simulated by making the
optional packages unimportable, a full disk simulated by a file-size limit) and checks the sentence, the exit status
and what is left on disk.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from moviellm_data.errors import ConfigError
from moviellm_data.pipeline import GenerateOptions, generate, plan_requests
from moviellm_data.renderers import StoryboardRenderer
from moviellm_data.shards import read_manifest, read_movies
from moviellm_data.sizes import StorySize
from moviellm_data.writers import ProceduralWriter

from .conftest import REPO, run_cli
from .core_install import core_python

def _core_python(code: str, workdir: Path) -> subprocess.CompletedProcess:
    """Run ``code`` as on the core install (`pip install -e .`: no torch, transformers, openai, torchcodec ...)."""
    return core_python(code, workdir)


def _one_sentence(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


# ------------------------------------------------------------------------------------------ the core install


def test_every_verb_prints_its_help_on_the_core_install(tmp_path):
    done = _core_python("""
        import contextlib, io, json
        from moviellm_data import cli
        cli._load_command_modules()
        report = {}
        for name, *_ in cli._VERBS:
            out = io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
                try:
                    code = cli.main([name, "--help"])
                except SystemExit as exit:
                    code = exit.code
            report[name] = [code, out.getvalue()]
        print(json.dumps(report))
    """, tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert {"generate", "convert-llamavid", "train", "eval", "answer", "chat", "export", "preview"} <= set(report)
    for name, (code, text) in report.items():
        assert code == 0 and text.startswith(f"usage: moviellm {name}"), (name, code, text[:200])
    assert "--vision-tower" in report["convert-llamavid"][1] and "Hub id" in report["convert-llamavid"][1]


def test_the_readme_builder_snippet_runs_on_the_core_install(tmp_path):
    done = _core_python(f"""
        from moviellm_data.builders.synthetic_movies import SyntheticMovies
        builder = SyntheticMovies(config_name="offline-tiny", cache_dir={str(tmp_path / "cache")!r})
        builder.download_and_prepare()
        movies = builder.as_dataset(split="train")
        print(len(movies), sorted(movies.column_names))
    """, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "4 ['__key__', '__url__', 'json', 'mp4']"


def test_verbose_is_accepted_before_and_after_the_verb(tmp_path):
    from moviellm_data.cli import build_parser

    base = ["--movies", "1", "--out", str(tmp_path / "x")]
    assert build_parser(["generate"]).parse_args(["generate", "-v", *base]).verbose is True
    assert build_parser(["generate"]).parse_args(["-v", "generate", *base]).verbose is True
    assert build_parser(["generate"]).parse_args(["generate", *base]).verbose is False
    done = run_cli("generate", "--movies", "1", "--out", str(tmp_path / "v"), "--no-progress", "-v")
    assert done.returncode == 0, done.stderr
    assert "wrote 1 movie," in done.stdout and "the dataset holds 1 movie." in done.stdout


class _InterruptAfter(StoryboardRenderer):
    """Renders ``ok`` movies, then interrupts (as a kill would) while drawing the next one."""

    def __init__(self, ok: int) -> None:
        super().__init__(128, 96)
        self.ok = ok

    def render_frames(self, script):
        if self.ok == 0:
            raise KeyboardInterrupt
        self.ok -= 1
        return super().render_frames(script)


def test_movies_staged_by_a_killed_run_count_in_the_resumed_summary(tmp_path):
    options = GenerateOptions(out=tmp_path / "m", movies=3)  # one 1 GB shard: nothing is packed before the end
    with pytest.raises(KeyboardInterrupt):
        generate(options, ProceduralWriter("tiny"), _InterruptAfter(2), progress=False)
    assert len(list((tmp_path / "m" / ".moviellm" / "staging-r0000").glob("*.json"))) == 2
    result = generate(options, ProceduralWriter("tiny"), StoryboardRenderer(128, 96), progress=False)
    assert (result.written, result.skipped, result.total_in_dataset) == (3, 0, 3)
    again = generate(options, ProceduralWriter("tiny"), StoryboardRenderer(128, 96), progress=False)
    assert (again.written, again.skipped) == (0, 3)


# ------------------------------------------------------------------------------------------------- bounds


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--size", "99999x99999x99999"], "more than the 32,768 a movie may have"),
        (["--movies", "100000000"], "more than the 1,000,000 movies a dataset may hold"),
        (["--width", "100000"], "even sizes of 64 to 4096 pixels"),
        (["--width", "0"], "even sizes of 64 to 4096 pixels"),
        (["--height", "4098"], "even sizes of 64 to 4096 pixels"),
        (["--crf", "99"], "from 0 (lossless) to 51"),
        (["--themes", "x" * 301], "more than the 300 a theme may have"),
    ],
)
def test_out_of_bounds_options_are_refused_before_anything_is_written(tmp_path, args, expected):
    out = tmp_path / "never"
    if "--movies" not in args:
        args = ["--movies", "1", *args]
    done = run_cli("generate", "--out", str(out), *args)
    assert done.returncode == 2 and expected in _one_sentence(done.stderr)
    assert not out.exists()


def test_a_themes_file_with_a_huge_line_is_refused(tmp_path):
    themes = tmp_path / "themes.txt"
    themes.write_text("a love story\n" + "y" * 1_000_000 + "\n")
    done = run_cli("generate", "--movies", "1", "--out", str(tmp_path / "never"), "--themes-file", str(themes))
    assert done.returncode == 2 and "theme 2 has 1,000,000 characters" in _one_sentence(done.stderr)
    assert not (tmp_path / "never").exists()


def test_the_library_checks_the_same_bounds(tmp_path):
    from moviellm_data.renderers.settings import RenderSettings
    from moviellm_data.video import encode_mp4

    with pytest.raises(ConfigError, match="more than the 32,768"):
        StorySize(99999, 99999, 99999)
    with pytest.raises(ConfigError, match="1,000,000"):
        GenerateOptions(out=tmp_path / "a", movies=10**8)
    with pytest.raises(ConfigError, match="0 .lossless. to 51"):
        GenerateOptions(out=tmp_path / "a", movies=1, crf=99)
    with pytest.raises(ConfigError, match="300 a theme may have"):
        GenerateOptions(out=tmp_path / "a", movies=1, themes=["z" * 1000])
    with pytest.raises(ConfigError, match="even sizes of 64 to 4096"):
        StoryboardRenderer(100_000, 96)
    with pytest.raises(ConfigError, match="even sizes of 64 to 4096"):
        RenderSettings(width=100_000, height=1024)
    with pytest.raises(ConfigError, match="0 .lossless. to 51"):
        encode_mp4([np.zeros((64, 64, 3), np.uint8)], crf=99)
    assert not (tmp_path / "a").exists()


def test_requests_are_planned_lazily():
    tracemalloc.start()
    try:
        plan = plan_requests(1_000_000, 3, None)
        middle, last = plan[500_000], plan[-1]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(plan) == 1_000_000 and peak < 1_000_000  # a list of them would be hundreds of megabytes
    assert (middle.index, last.index) == (500_000, 999_999)
    assert [r.id for r in plan_requests(5, 3, None)] == [r.id for r in plan][:5]


class _FirstMovieOnly(ProceduralWriter):
    """Writes the first movie it is asked for and then stops the run; records how many requests it was handed."""

    def write_many(self, requests):
        self.first = next(iter(requests))
        yield self.write(self.first)
        raise KeyboardInterrupt


def test_a_huge_dataset_starts_without_planning_every_movie(tmp_path):
    writer = _FirstMovieOnly("1x1x1")
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            generate(GenerateOptions(out=tmp_path / "big", movies=200_000), writer, StoryboardRenderer(64, 64),
                     progress=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert writer.first.index == 0
    assert peak < 30_000_000, f"{peak / 1e6:.0f} MB: the run planned every movie up front"
    assert time.monotonic() - started < 60


# ------------------------------------------------------------------------------ operating-system failures


def _limit_file_size(limit: int):
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def _moviellm(*args: str, file_size_limit: int | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "moviellm_data", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=180, preexec_fn=_limit_file_size(file_size_limit) if file_size_limit else None)


def test_a_full_disk_while_packing_is_one_sentence_and_leaves_no_partial_shard(tmp_path):
    out = tmp_path / "full"
    command = ["generate", "--movies", "3", "--out", str(out), "--width", "128", "--height", "96", "--no-progress"]
    # Each staged movie fits under the limit; the shard of all three does not ("File too large", as on a full disk).
    done = _moviellm(*command, file_size_limit=60_000)
    sentence = _one_sentence(done.stderr)
    assert done.returncode == 3, done.stderr
    assert "writing shard" in sentence and "File too large" in sentence and str(out) in sentence
    assert not list(out.glob("*.tar*")), "a partial shard was left visible"
    assert len(list((out / ".moviellm" / "staging-r0000").glob("*.json"))) == 3
    again = _moviellm(*command)
    assert again.returncode == 0, again.stderr
    assert "wrote 3 movies, 0 already there" in again.stdout
    assert len(read_manifest(out / "manifest.jsonl")) == 3 and sum(1 for _ in read_movies(out)) == 3


def _dataset(tmp_path: Path) -> Path:
    out = tmp_path / "movies"
    generate(GenerateOptions(out=out, movies=2, seed=4), ProceduralWriter("tiny"), StoryboardRenderer(128, 96),
             progress=False)
    return out


def _unwritable(tmp_path: Path) -> str:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    # root ignores permission bits: /proc refuses new folders to everyone
    return "/proc/moviellm-test" if os.access(locked, os.W_OK) else str(locked / "sub")


@pytest.mark.parametrize("verb", ["preview", "export"])
def test_an_unwritable_out_is_one_sentence(tmp_path, verb):
    movies = _dataset(tmp_path)
    args = ["export", "llamavid", str(movies)] if verb == "export" else ["preview", str(movies)]
    done = _moviellm(*args, "--out", _unwritable(tmp_path), "--no-progress")
    assert done.returncode == 2 and "choose a writable folder" in _one_sentence(done.stderr)


@pytest.mark.parametrize("verb", ["preview", "export"])
def test_a_full_disk_while_writing_previews_and_exports_leaves_nothing_half_written(tmp_path, verb):
    movies = _dataset(tmp_path)
    out = tmp_path / "out"
    args = ["export", "llamavid", str(movies)] if verb == "export" else ["preview", str(movies)]
    done = _moviellm(*args, "--out", str(out), "--no-progress", file_size_limit=4_000)
    sentence = _one_sentence(done.stderr)
    assert done.returncode == 3 and "File too large" in sentence and str(out) in sentence, done.stderr
    hidden = [p for p in out.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp")]
    assert not [p for p in hidden if p.name != ".moviellm-preview"], hidden
    for path in out.rglob("*"):  # whatever is there is whole: the files a rerun would skip
        if path.suffix == ".mp4":
            assert path.read_bytes() in {mp4 for _, mp4 in read_movies(movies, decode=False)}
    again = _moviellm(*args, "--out", str(out), "--no-progress")
    assert again.returncode == 0, again.stderr


def test_a_codec_error_outside_any_stage_still_is_one_sentence(monkeypatch, capsys):
    import av

    from moviellm_data import cli

    def broken(args):
        raise av.error.InvalidDataError(1094995529, "Invalid data found when processing input", "clip.mp4")

    monkeypatch.setattr(cli, "_VERBS", [("broken", "fails", lambda p: None, broken)])
    monkeypatch.setattr(cli, "_load_command_modules", lambda: None)
    code = cli.main(["broken"])
    assert code == cli.EXIT_SYSTEM_ERROR != cli.EXIT_USER_ERROR
    sentence = _one_sentence(capsys.readouterr().err)
    assert sentence.startswith("moviellm broken: error:") and "clip.mp4" in sentence and "Invalid data" in sentence
