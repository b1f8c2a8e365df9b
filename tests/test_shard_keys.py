"""Issue 12, readers: samples are grouped by their full key (folder included) as webdataset groups them, and a
sample's key must be its movie's id, in every reader we ship (shards, export, preview, training records)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from moviellm_data.errors import ShardError
from moviellm_data.pipeline import GenerateOptions, generate
from moviellm_data.renderers import StoryboardRenderer
from moviellm_data.shards import iter_tar_samples, read_movies
from moviellm_data.writers import ProceduralWriter

from .conftest import run_cli


@pytest.fixture(scope="module")
def one_movie(tmp_path_factory) -> tuple[dict, bytes]:
    out = tmp_path_factory.mktemp("keys") / "movies"
    generate(GenerateOptions(out=out, movies=1, seed=2), ProceduralWriter("tiny"), StoryboardRenderer(128, 96),
             progress=False)
    (script, mp4), = read_movies(out, decode=False)
    return json.loads(script.to_json()), mp4


def _tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _movie(script: dict, movie_id: str) -> bytes:
    return json.dumps({**script, "id": movie_id}).encode()


def test_same_file_name_in_two_folders_is_two_samples_as_in_webdataset(one_movie, tmp_path):
    import webdataset as wds

    script, mp4 = one_movie
    shard = _tar(tmp_path / "two.tar", [("a/m000001_aa.json", _movie(script, "m000001_aa")),
                                        ("a/m000001_aa.mp4", mp4),
                                        ("b/m000001_aa.json", _movie(script, "m000001_aa")),
                                        ("b/m000001_aa.mp4", mp4)])
    theirs = [sample["__key__"] for sample in wds.WebDataset(str(shard), shardshuffle=False)]
    ours = [key for key, _ in iter_tar_samples(shard)]
    assert ours == theirs == ["a/m000001_aa", "b/m000001_aa"]
    from datasets import load_dataset

    rows = load_dataset("webdataset", data_files={"train": str(shard)}, split="train", cache_dir=str(tmp_path / "hf"))
    assert list(rows["__key__"]) == ours
    assert len(list(read_movies(shard))) == 2

    from moviellm_model.training.records import MovieSource

    records = list(MovieSource(str(shard)))
    assert [r.error for r in records] == [None, None] and len(records) == 2


def test_a_script_whose_id_is_not_its_key_is_refused_by_every_reader(one_movie, tmp_path):
    script, mp4 = one_movie
    shard = _tar(tmp_path / "mismatch.tar", [("m000002_bb.json", _movie(script, "m000001_aa")),
                                             ("m000002_bb.mp4", mp4)])
    with pytest.raises(ShardError, match="sample m000002_bb in .* holds the script of movie m000001_aa"):
        list(read_movies(shard, decode=False))
    done = run_cli("export", "llamavid", str(shard), "--out", str(tmp_path / "export"), "--no-progress")
    assert done.returncode == 2 and "holds the script of movie m000001_aa" in done.stderr
    assert not (tmp_path / "export" / "long_videoqa.json").exists()
    done = run_cli("preview", str(shard), "--out", str(tmp_path / "preview"), "--no-progress")
    assert done.returncode == 2 and "holds the script of movie m000001_aa" in done.stderr

    from moviellm_model.training.records import MovieSource

    record, = list(MovieSource(str(shard)))
    assert record.error and "holds the script of movie m000001_aa" in record.error


def test_a_member_twice_in_one_sample_is_refused_like_webdataset(one_movie, tmp_path):
    script, mp4 = one_movie
    shard = _tar(tmp_path / "twice.tar", [("m000001_aa.json", _movie(script, "m000001_aa")),
                                          ("m000001_aa.json", _movie(script, "m000001_aa")),
                                          ("m000001_aa.mp4", mp4)])
    with pytest.raises(ShardError, match="holds m000001_aa.json twice in sample m000001_aa"):
        list(iter_tar_samples(shard))
