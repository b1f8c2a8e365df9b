"""``moviellm render SCRIPTS --out DIR``: scripts written earlier into a new dataset folder."""

from __future__ import annotations

import json

import pytest

from moviellm_data.cli import main
from moviellm_data.errors import ConfigError
from moviellm_data.pipeline import GenerateOptions, generate, render
from moviellm_data.renderers import StoryboardRenderer
from moviellm_data.shards import read_movies
from moviellm_data.writers.prewritten import PrewrittenWriter, read_scripts
from moviellm_data.writers.procedural import ProceduralWriter


@pytest.fixture(scope="module")
def storyboard_dataset(tmp_path_factory):
    """Two 4-frame movies drawn by the storyboard renderer."""
    out = tmp_path_factory.mktemp("storyboard") / "movies"
    generate(GenerateOptions(out=out, movies=2, seed=5), ProceduralWriter("1x2x2"), StoryboardRenderer(64, 64), progress=False)
    return out


def _diffusers_args(tiny_sdxl, tmp_path, *extra):
    base, refiner = tiny_sdxl
    return ["--renderer", "diffusers", "--image-model", str(base), "--refiner", str(refiner), "--width", "64",
            "--height", "64", "--steps", "2", "--dtype", "float32", "--vae-dtype", "float32", "--batch-size", "4",
            "--style", "none", "--no-progress", *extra]


def test_render_a_dataset_again_with_diffusers(storyboard_dataset, tiny_sdxl, tmp_path, capsys):
    out = tmp_path / "rendered"
    args = ["render", str(storyboard_dataset), "--out", str(out), *_diffusers_args(tiny_sdxl, tmp_path)]
    assert main(args) == 0
    assert "rendered 2 movies" in capsys.readouterr().out
    before = {s.id: s for s, _ in read_movies(storyboard_dataset, decode=False)}
    after = list(read_movies(out))
    assert sorted(s.id for s, _ in after) == sorted(before)
    for script, frames in after:
        assert frames.shape == (4, 64, 64, 3)
        assert script.provenance.renderer.name == "diffusers" and script.provenance.renderer.steps == 2
        # The story is untouched: only the renderer's provenance changed.
        old = before[script.id]
        assert script.acts == old.acts and script.qa == old.qa and script.provenance.writer == old.provenance.writer
    recipe = (out / "pipeline.yaml").read_text()
    assert "prewritten" in recipe and "diffusers" in recipe

    # The same command continues (here: finds everything done); other settings are refused.
    assert main(args) == 0
    assert "rendered 0 movies, 2 already there" in capsys.readouterr().out
    assert main(["render", str(storyboard_dataset), "--out", str(out), *_diffusers_args(tiny_sdxl, tmp_path, "--render-seed", "3")]) == 2
    assert "different recipe" in capsys.readouterr().err


def test_render_script_files_and_jsonl(storyboard_dataset, tmp_path, capsys):
    scripts = [s for s, _ in read_movies(storyboard_dataset, decode=False)]
    folder = tmp_path / "scripts"
    folder.mkdir()
    (folder / "first.json").write_text(scripts[0].to_json(indent=2))
    lines = tmp_path / "more.jsonl"
    lines.write_text(scripts[1].to_json() + "\n\n")
    out = tmp_path / "out"
    assert main(["render", str(folder), str(lines), "--out", str(out), "--width", "64", "--height", "64", "--no-progress"]) == 0
    rendered = {s.id: frames for s, frames in read_movies(out)}
    assert list(rendered) == [scripts[0].id, scripts[1].id]
    assert all(f.shape == (4, 64, 64, 3) for f in rendered.values())
    capsys.readouterr()


def test_bad_script_sources_are_one_sentence(storyboard_dataset, tmp_path, capsys):
    script = next(s for s, _ in read_movies(storyboard_dataset, decode=False))
    twice = tmp_path / "twice"
    twice.mkdir()
    (twice / "a.json").write_text(script.to_json())
    (twice / "b.json").write_text(script.to_json())
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    invalid = tmp_path / "invalid.json"
    invalid.write_text(json.dumps({"id": "x.y"}))
    cases = [
        ([str(twice)], "appears twice"),
        ([str(broken)], "is not JSON"),
        ([str(invalid)], "is not a valid movie script"),
        ([str(tmp_path / "missing")], "does not exist"),
        ([str(tmp_path / "notes.txt")], "does not exist"),
    ]
    for sources, message in cases:
        assert main(["render", *sources, "--out", str(tmp_path / "never"), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "never").exists()
    with pytest.raises(ConfigError, match="one of the SCRIPTS sources"):
        render([storyboard_dataset], storyboard_dataset, StoryboardRenderer(64, 64), progress=False)


def test_prewritten_writer_hashes_content_not_rendering(storyboard_dataset):
    scripts = [item.script for item in read_scripts([storyboard_dataset])]
    writer = PrewrittenWriter(scripts)
    assert [r.id for r in writer.requests()] == [s.id for s in scripts]
    assert [r.index for r in writer.requests()] == [0, 1]
    assert writer.write(writer.requests()[1]) is scripts[1]
    rerendered = [s.model_copy(deep=True) for s in scripts]
    rerendered[0].provenance.created_at = "2030-01-01T00:00:00+00:00"
    assert PrewrittenWriter(rerendered).describe() == writer.describe()
    edited = [s.model_copy(deep=True) for s in scripts]
    edited[0].title = "Another Title"
    assert PrewrittenWriter(edited).describe() != writer.describe()
