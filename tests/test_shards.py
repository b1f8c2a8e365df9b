"""Shard writing and reading: atomic, deterministic, and clear about damage."""

from __future__ import annotations

import json

import numpy as np
import pytest

from moviellm_data.errors import ShardError
from moviellm_data.shards import (
    ManifestEntry,
    append_manifest,
    iter_tar_samples,
    read_manifest,
    read_movies,
    write_shard,
)
from moviellm_data.video import decode_mp4, encode_mp4


def gradient_frames(n, h=64, w=96):
    return [np.full((h, w, 3), 20 * i, dtype=np.uint8) for i in range(n)]


def test_mp4_round_trip_keeps_frame_count_and_order():
    frames = gradient_frames(7)
    decoded = decode_mp4(encode_mp4(frames))
    assert decoded.shape == (7, 64, 96, 3)
    means = decoded.reshape(7, -1).mean(axis=1)
    assert np.all(np.diff(means) > 10)  # order kept
    assert np.abs(means - np.array([20 * i for i in range(7)])).max() < 3


def test_corrupt_mp4_gets_one_sentence():
    with pytest.raises(ShardError, match="not a decodable mp4"):
        decode_mp4(b"not a video", source="x.mp4")


def test_shards_are_written_atomically_and_deterministically(tmp_path):
    samples = [("a1", {"json": b"{}", "mp4": b"123"}), ("b2", {"mp4": b"45", "json": b"[]"})]
    first = tmp_path / "s1.tar"
    write_shard(first, samples)
    second = tmp_path / "s2.tar"
    write_shard(second, samples)
    assert first.read_bytes() == second.read_bytes()
    assert not list(tmp_path.glob("*.tmp"))
    read = list(iter_tar_samples(first))
    assert read == [("a1", {"json": b"{}", "mp4": b"123"}), ("b2", {"json": b"[]", "mp4": b"45"})]


def test_keys_with_dots_are_refused(tmp_path):
    with pytest.raises(ShardError, match="contains a dot"):
        write_shard(tmp_path / "x.tar", [("a.b", {"json": b"{}"})])


def test_truncated_and_foreign_files_are_reported(tiny_dataset, tmp_path):
    shard = sorted(tiny_dataset.glob("*.tar"))[0]
    cut = tmp_path / "cut.tar"
    cut.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.raises(ShardError, match="is not a complete tar shard"):
        list(read_movies(cut))
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"\x00garbage" * 1000)
    with pytest.raises(ShardError):
        list(read_movies(junk))
    with pytest.raises(ShardError, match="does not exist"):
        list(read_movies(tmp_path / "absent.tar"))
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    with pytest.raises(ShardError, match="holds no .tar shards"):
        list(read_movies(empty))


def test_manifest_ignores_a_line_cut_by_a_kill(tmp_path):
    path = tmp_path / "m.jsonl"
    entry = ManifestEntry(id="a", index=0, shard="s.tar", bytes=1, sha256="x", frames=1)
    append_manifest(path, [entry])
    with open(path, "a") as fh:
        fh.write('{"id": "b", "ind')
    assert read_manifest(path) == [entry]
    append_manifest(path, [entry])  # drops the partial line, then appends
    assert read_manifest(path) == [entry, entry]
    assert path.read_text().count("\n") == 2
    with open(path, "w") as fh:
        fh.write('garbage\n' + entry.to_json() + "\n")
    with pytest.raises(ShardError, match="line 1 is not a manifest entry"):
        read_manifest(path)


def test_reader_checks_video_against_timeline(tiny_dataset, tmp_path):
    key, members = next(iter_tar_samples(sorted(tiny_dataset.glob("*.tar"))[0]))
    script = json.loads(members["json"])
    members["mp4"] = encode_mp4(gradient_frames(3, 256, 384))
    bad = tmp_path / "bad.tar"
    write_shard(bad, [(key, members)])
    with pytest.raises(ShardError, match=f"has 3 frames but its script has {len(script['timeline'])}"):
        list(read_movies(bad))
