"""Issue 12, exports: every movie's video is decoded and counted before it is copied; nothing is exported about
frames that do not exist."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

from moviellm_data.shards import iter_tar_samples
from moviellm_data.video import encode_mp4
from tests.publish.publish_support import cli


def _rewrite_first_mp4(folder: Path, mp4: bytes) -> None:
    """Replace the mp4 member of the first movie of the first shard (the rest of the folder stays as it was)."""
    shard = sorted(folder.glob("*.tar"))[0]
    samples = list(iter_tar_samples(shard))
    samples[0][1]["mp4"] = mp4
    with tarfile.open(shard, "w") as tar:
        for key, members in samples:
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize(
    ("what", "make_mp4", "expected"),
    [
        ("not a video", lambda: json.dumps({"not": "a video"}).encode(), "is not a decodable mp4 video"),
        ("a short video", lambda: encode_mp4([np.zeros((96, 128, 3), np.uint8)] * 5), "has 5 frames but its script has 12"),
    ],
)
def test_export_refuses_a_member_that_is_not_the_movies_video(movies, tmp_path, what, make_mp4, expected):
    broken = tmp_path / "broken"
    shutil.copytree(movies, broken)
    _rewrite_first_mp4(broken, make_mp4())
    out = tmp_path / "export"
    done = cli("export", "llamavid", str(broken), "--out", str(out), "--no-progress")
    assert done.returncode == 2, (what, done.stdout, done.stderr)
    assert expected in done.stderr and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert not (out / "long_videoqa.json").exists(), "conversations about frames that do not exist"
    assert not list((out / "videos").glob("*")), "the broken movie (the first) was copied"


def test_export_help_says_where_videos_are_and_what_frames_are_to_the_original(tmp_path):
    text = cli("export", "--help").stdout
    for words in ("--video_folder OUT", "videos/<id>.pkl", "SHORT video", "decoded and counted"):
        assert words in " ".join(text.split()), words
