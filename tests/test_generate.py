"""`moviellm generate` end to end: readers of every kind, resume after SIGKILL, ranks, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml

from moviellm_data.renderers import StoryboardRenderer
from moviellm_data.script import MovieScript
from moviellm_data.shards import iter_tar_samples, read_manifest, read_movies

from .conftest import REPO, run_cli


@pytest.fixture(scope="module")
def cli_dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "movies"
    proc = run_cli("generate", "--movies", "4", "--out", str(out), "--themes", "a love story", "a bank heist")
    assert proc.returncode == 0, proc.stderr
    assert "wrote 4 movies" in proc.stdout
    return out


def test_folder_layout(cli_dataset):
    names = sorted(p.name for p in cli_dataset.iterdir())
    assert names == [".moviellm", "README.md", "manifest.jsonl", "movies-r0000-00000.tar", "pipeline.yaml"]
    recipe = yaml.safe_load((cli_dataset / "pipeline.yaml").read_text())
    assert recipe["movies"] == 4 and recipe["recipe"]["themes"] == ["a love story", "a bank heist"]
    assert recipe["command"].startswith("moviellm generate --movies 4")
    entries = read_manifest(cli_dataset / "manifest.jsonl")
    assert [e.index for e in entries] == [0, 1, 2, 3]
    assert all(e.frames == 12 and e.shard == "movies-r0000-00000.tar" for e in entries)


def test_our_reader_gives_frames_matching_the_timeline(cli_dataset):
    movies = list(read_movies(cli_dataset))
    assert len(movies) == 4
    assert [s.theme for s, _ in movies] == ["a love story", "a bank heist"] * 2
    renderer = StoryboardRenderer()
    for script, frames in movies:
        assert frames.shape == (script.num_frames, 256, 384, 3)
        assert script.provenance.renderer.name == "storyboard" and script.provenance.created_at
        # Frame t shows shot t: it is closer to the drawing of shot t than to any other shot's drawing.
        drawn = np.stack(list(renderer.render_frames(script))).astype(np.float32)
        for t, frame in enumerate(frames.astype(np.float32)):
            errors = ((drawn - frame) ** 2).mean(axis=(1, 2, 3))
            assert int(errors.argmin()) == t
            psnr = 10 * np.log10(255.0**2 / errors[t])
            assert psnr > 32  # H.264 at crf 18 stays close to the drawing


def test_subtitle_of_frame_t_is_drawn_on_frame_t(cli_dataset):
    renderer = StoryboardRenderer()
    for script, frames in read_movies(cli_dataset):
        for t, frame in enumerate(frames):
            subtitle = script.timeline[t].subtitle
            shot = script.shots()[t]
            band_dark = (frame[-3:].max(axis=2) < 40).mean() > 0.9
            assert band_dark == (subtitle is not None)
            if subtitle is None:
                continue
            # Swap in another line: the band must then differ; keep ours: it must match.
            ours = np.asarray(renderer.draw(script, shot, script.timeline[t].act, script.timeline[t].scene,
                                            script.timeline[t].shot, subtitle), dtype=np.float32)
            other = np.asarray(renderer.draw(script, shot, script.timeline[t].act, script.timeline[t].scene,
                                             script.timeline[t].shot, "Nobody: a different line entirely."),
                               dtype=np.float32)
            band = slice(frame.shape[0] - 40, frame.shape[0])
            got = frame[band].astype(np.float32)
            assert ((got - ours[band]) ** 2).mean() < ((got - other[band]) ** 2).mean() / 4


def test_datasets_webdataset_loader_reads_every_movie(cli_dataset):
    from datasets import Video, load_dataset

    ds = load_dataset("webdataset", data_files=str(cli_dataset / "*.tar"), split="train")
    assert len(ds) == 4
    ds = ds.cast_column("mp4", Video(decode=False))
    row = ds[0]
    script = MovieScript.from_dict(row["json"])
    assert script.id == row["__key__"]


@pytest.mark.parametrize("streaming", [False, True])
def test_load_dataset_on_the_folder_uses_the_card_features(cli_dataset, streaming):
    from datasets import Video, load_dataset

    from moviellm_data.features import movie_features
    from moviellm_data.video import decode_mp4

    ds = load_dataset(str(cli_dataset), split="train", streaming=streaming)
    assert ds.features == movie_features()
    ds = ds.cast_column("mp4", Video(decode=False))
    rows = list(ds)
    assert len(rows) == 4
    for row in rows:
        script = MovieScript.from_dict(row["json"])  # nothing dropped: the full contract validates
        assert script.id == row["__key__"]
        frames = decode_mp4(row["mp4"]["bytes"])
        assert len(frames) == script.num_frames


def test_datasets_webdataset_loader_streaming(cli_dataset):
    from datasets import Video, load_dataset

    ds = load_dataset("webdataset", data_files=str(cli_dataset / "*.tar"), split="train", streaming=True)
    ds = ds.cast_column("mp4", Video(decode=False))  # decoding needs torchcodec, absent here
    assert sorted(row["__key__"] for row in ds) == sorted(e.id for e in read_manifest(cli_dataset / "manifest.jsonl"))


def test_webdataset_library_reads_the_same_tars(cli_dataset):
    import webdataset as wds

    from moviellm_data.video import decode_mp4

    urls = [str(p) for p in sorted(cli_dataset.glob("*.tar"))]
    samples = list(wds.WebDataset(urls, shardshuffle=False))
    assert len(samples) == 4
    for sample in samples:
        script = MovieScript.from_json(sample["json"])
        assert script.id == sample["__key__"]
        assert len(decode_mp4(sample["mp4"])) == script.num_frames


def test_rerun_is_idempotent_and_extends(cli_dataset, tmp_path):
    before = {p.name: p.read_bytes() for p in cli_dataset.glob("*.tar")}
    manifest = (cli_dataset / "manifest.jsonl").read_text()
    proc = run_cli("generate", "--movies", "4", "--out", str(cli_dataset), "--themes", "a love story", "a bank heist")
    assert proc.returncode == 0 and "wrote 0 movies, 4 already there" in proc.stdout
    assert {p.name: p.read_bytes() for p in cli_dataset.glob("*.tar")} == before
    assert (cli_dataset / "manifest.jsonl").read_text() == manifest


def test_extending_a_dataset_adds_only_new_movies(tmp_path):
    out = tmp_path / "grow"
    assert run_cli("generate", "--movies", "2", "--out", str(out), "--no-progress").returncode == 0
    proc = run_cli("generate", "--movies", "5", "--out", str(out), "--no-progress")
    assert proc.returncode == 0 and "wrote 3 movies, 2 already there" in proc.stdout
    ids = [e.id for e in read_manifest(out / "manifest.jsonl")]
    assert len(ids) == len(set(ids)) == 5
    assert yaml.safe_load((out / "pipeline.yaml").read_text())["movies"] == 5


def _generate_command(out: Path, movies: int) -> list[str]:
    return [sys.executable, "-m", "moviellm_data.cli", "generate", "--movies", str(movies), "--out", str(out),
            "--shard-size", "120KB", "--size", "2x2x4", "--no-progress"]


def _check_complete(out: Path, movies: int) -> None:
    entries = read_manifest(out / "manifest.jsonl")
    ids = [e.id for e in entries]
    assert len(ids) == movies and len(set(ids)) == movies
    assert sorted(e.index for e in entries) == list(range(movies))
    in_tars = Counter()
    for shard in sorted(out.glob("*.tar")):
        for key, members in iter_tar_samples(shard):
            in_tars[key] += 1
            assert set(members) == {"json", "mp4"}
    assert in_tars == Counter(ids)  # every listed movie is in exactly one tar, nothing unlisted
    assert not list(out.glob("*.tmp")) and not list((out / ".moviellm").glob("staging-*/*"))
    assert sum(1 for _ in read_movies(out)) == movies


@pytest.mark.parametrize("kill_after_lines", [0, 2, 9])
def test_sigkill_then_the_same_command_finishes_without_duplicates(tmp_path, kill_after_lines):
    out, movies = tmp_path / "killed", 24
    command = _generate_command(out, movies)
    part = out / ".moviellm" / "manifest-r0000.jsonl"
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        staged = list((out / ".moviellm").glob("staging-*/*.mp4")) if out.exists() else []
        lines = part.read_text().count("\n") if part.exists() else 0
        if lines >= kill_after_lines and (staged or lines):
            break
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = read_manifest(out / "manifest.jsonl") if (out / "manifest.jsonl").exists() else []
    assert len(before) < movies, "the kill came too late to test anything"
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    _check_complete(out, movies)


def test_leftovers_of_a_kill_at_every_step_are_recovered(tmp_path):
    out, movies = tmp_path / "leftovers", 6
    assert subprocess.run(_generate_command(out, movies), cwd=REPO).returncode == 0
    part = out / ".moviellm" / "manifest-r0000.jsonl"
    lines = part.read_text().splitlines(keepends=True)
    last_shard = json.loads(lines[-1])["shard"]
    # A shard renamed into place whose manifest lines were never written, a half-written line,
    # a half-written shard and a half-written staged file:
    kept = [l for l in lines if json.loads(l)["shard"] != last_shard]
    part.write_text("".join(kept) + '{"id": "m0000')
    (out / "movies-r0000-00099.tar.tmp").write_bytes(b"partial")
    staging = out / ".moviellm" / "staging-r0000"
    (staging / "m000005_dead.mp4.tmp").write_bytes(b"partial")
    proc = subprocess.run(_generate_command(out, movies), cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "wrote 0 movies" in proc.stdout
    _check_complete(out, movies)


def test_ranks_share_the_work_and_the_manifest_merges(tmp_path):
    out, movies = tmp_path / "ranks", 7
    procs = [
        subprocess.Popen(_generate_command(out, movies), cwd=REPO, env={**os.environ, "RANK": str(r), "WORLD_SIZE": "2"},
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for r in range(2)
    ]
    for p in procs:
        stdout, stderr = p.communicate(timeout=120)
        assert p.returncode == 0, stderr
    _check_complete(out, movies)
    by_rank = Counter(e.shard.split("-")[1] for e in read_manifest(out / "manifest.jsonl"))
    assert by_rank == {"r0000": 4, "r0001": 3}
    # One process alone makes byte-identical scripts (the split is invisible in the data).
    alone = tmp_path / "alone"
    assert subprocess.run(_generate_command(alone, movies), cwd=REPO).returncode == 0

    def scripts(folder):
        out = {}
        for s, _ in read_movies(folder, decode=False):
            data = json.loads(s.to_json())
            data["provenance"].pop("created_at")
            out[s.id] = data
        return out

    assert scripts(out) == scripts(alone)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--movies", "0"], "must be at least 1"),
        (["--movies", "2", "--size", "huge"], "unknown movie size 'huge'"),
        (["--movies", "2", "--themes-file", "/nonexistent/themes.txt"], "themes file /nonexistent/themes.txt does not exist"),
        (["--movies", "2", "--width", "101"], "even sizes"),
        (["--movies", "2", "--dialogue-ratio", "3"], "between 0 and 1"),
    ],
)
def test_bad_options_get_one_sentence_and_write_nothing(tmp_path, args, expected):
    out = tmp_path / "never"
    proc = run_cli("generate", "--out", str(out), *args)
    assert proc.returncode == 2
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) <= 2
    assert not out.exists()


def test_output_that_is_a_file_or_unwritable_or_foreign(tmp_path):
    a_file = tmp_path / "file.txt"
    a_file.write_text("keep me")
    proc = run_cli("generate", "--movies", "1", "--out", str(a_file))
    assert proc.returncode == 2 and "is a file, not a folder" in proc.stderr
    assert a_file.read_text() == "keep me"

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "README.md").write_text("my notes")
    proc = run_cli("generate", "--movies", "1", "--out", str(foreign))
    assert proc.returncode == 2 and "not empty and holds no moviellm dataset" in proc.stderr
    assert (foreign / "README.md").read_text() == "my notes" and sorted(p.name for p in foreign.iterdir()) == ["README.md"]

    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):  # root ignores permission bits: use a read-only bind instead
            proc = run_cli("generate", "--movies", "1", "--out", "/proc/moviellm-test")
        else:
            proc = run_cli("generate", "--movies", "1", "--out", str(locked / "sub"))
        assert proc.returncode == 2 and "choose a writable folder" in proc.stderr
    finally:
        locked.chmod(0o700)


def test_changed_recipe_is_refused_and_data_kept(cli_dataset):
    def snapshot():
        return {p.relative_to(cli_dataset): p.read_bytes() for p in cli_dataset.rglob("*") if p.is_file()}

    before = snapshot()
    proc = run_cli("generate", "--movies", "4", "--out", str(cli_dataset), "--size", "small")
    assert proc.returncode == 2 and "different recipe (themes, writer differ)" in proc.stderr
    assert snapshot() == before


def test_themes_file(tmp_path):
    themes = tmp_path / "themes.txt"
    themes.write_text("# my themes\na dragon's egg\n\na city flood\n")
    out = tmp_path / "themed"
    assert run_cli("generate", "--movies", "3", "--out", str(out), "--themes-file", str(themes)).returncode == 0
    assert [s.theme for s, _ in read_movies(out, decode=False)] == ["a dragon's egg", "a city flood", "a dragon's egg"]
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    proc = run_cli("generate", "--movies", "1", "--out", str(tmp_path / "x"), "--themes-file", str(empty))
    assert proc.returncode == 2 and "has no themes" in proc.stderr


def test_corrupt_tar_given_to_the_reader_cli_free(tmp_path):
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"\x00" * 10 + b"junk" * 300)
    from moviellm_data.errors import ShardError

    with pytest.raises(ShardError, match="bad.tar is not a complete tar shard"):
        list(read_movies(bad))


def _cli_without(blocked: list[str], *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the command line as on a core install: the named optional packages cannot be imported."""
    code = ("import sys\n"
            f"for name in {blocked!r}: sys.modules[name] = None\n"
            "from moviellm_data.cli import main\n"
            f"sys.exit(main({list(args)!r}))\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, **(env or {})}, timeout=120)


def test_core_install_help_and_missing_extras_are_one_sentence(tmp_path):
    blocked = ["torch", "transformers", "diffusers", "openai"]
    proc = _cli_without(blocked, "--help")
    assert proc.returncode == 0 and "convert-llamavid" in proc.stdout
    proc = _cli_without(blocked, "generate", "--movies", "1", "--out", str(tmp_path / "a"), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    cases = [
        (["convert-llamavid", "x", "--bert", "y", "--out", str(tmp_path / "b")], "pip install 'moviellm[model]'"),
        (["generate", "--movies", "1", "--out", str(tmp_path / "c"), "--writer", "openai", "--llm-model", "m"],
         "pip install 'moviellm[llm]'"),
        (["generate", "--movies", "1", "--out", str(tmp_path / "d"), "--renderer", "diffusers"],
         "pip install 'moviellm[gen]'"),
    ]
    for args, expected in cases:
        proc = _cli_without(blocked, *args, env={"OPENAI_API_KEY": "sk-test-not-a-real-key"})
        assert proc.returncode == 2 and expected in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
    assert not (tmp_path / "c").exists() and not (tmp_path / "d").exists()
