"""moviellm preview: static pages with the keyframes, subtitles, QA evidence and outline; seen by Chromium."""

from __future__ import annotations

import html
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image
from tests.publish.publish_support import cli

from moviellm_data.preview import contact_sheet, evenly_spaced, frames_at
from moviellm_data.shards import read_movies
from moviellm_data.video import decode_mp4

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def preview(movies, tmp_path_factory):
    out = tmp_path_factory.mktemp("preview") / "html"
    result = cli("preview", str(movies), "--out", str(out), "--no-progress")
    assert result.returncode == 0, result.stderr
    return out


def test_every_movie_gets_a_page_with_frames_subtitles_qa_and_outline(movies, preview):
    scripts = [script for script, _ in read_movies(movies, decode=False)]
    index = (preview / "index.html").read_text()
    assert Image.open(preview / "contact_sheet.png").size[0] > 0
    for script in scripts:
        page = (preview / "movies" / f"{script.id}.html").read_text()
        assert f'href="movies/{script.id}.html"' in index
        frames = sorted((preview / "movies" / script.id).glob("f*.jpg"))
        assert len(frames) == script.num_frames == 12
        # Keyframes in timeline order, each with the subtitle shown on it.
        positions = [page.index(f'id="f{i}"') for i in range(script.num_frames)]
        assert positions == sorted(positions)
        for frame in script.timeline:
            if frame.subtitle:
                block = page[positions[frame.index]:page.index("</figure>", positions[frame.index])]
                assert html.escape(frame.subtitle) in block
        # Every QA with its evidence span; evidence frames are marked in the grid.
        assert page.count('<tr id="qa') == len(script.qa)
        for q, qa in enumerate(script.qa, start=1):
            assert f'data-span="{qa.evidence.start}-{qa.evidence.end}"' in page
            assert html.escape(qa.question) in page
            row = page[page.index(f'<tr id="qa{q}">'):]
            row = row[:row.index("</tr>")]
            shown = [int(x) for x in re.findall(r'alt="evidence frame (\d+)"', row)]
            assert shown and all(qa.evidence.start <= i <= qa.evidence.end for i in shown)
        cited = {i for qa in script.qa for i in range(qa.evidence.start, qa.evidence.end + 1)}
        for i in range(script.num_frames):
            assert (f'class="frame cited" id="f{i}"' in page) == (i in cited)
        for act in script.acts:
            assert html.escape(act.title) in page
        sheet = Image.open(preview / "movies" / script.id / "contact_sheet.png")
        assert sheet.width > 128 and sheet.height > 96


def test_preview_refuses_a_folder_it_did_not_write(movies, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    result = cli("preview", str(movies), "--out", str(tmp_path), "--no-progress")
    assert result.returncode == 2 and "not empty" in result.stderr
    assert (tmp_path / "notes.txt").read_text() == "mine"
    missing = cli("preview", str(tmp_path / "nope"), "--out", str(tmp_path / "html"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr and missing.stderr.count("\n") == 1


def _screenshot(page, tmp_path, name) -> np.ndarray:
    shot = tmp_path / f"{name}.png"
    subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
         f"--user-data-dir={tmp_path / ('profile-' + name)}", f"--screenshot={shot}", "--window-size=1280,900",
         page.as_uri()],
        capture_output=True, timeout=60, check=False,
    )
    assert shot.exists(), "chromium wrote no screenshot"
    return np.asarray(Image.open(shot).convert("RGB")).astype(int)


def _colourful(pixels: np.ndarray) -> float:
    """Share of strongly coloured pixels: the page chrome is dark grey, the drawn frames are colourful."""
    return float(((pixels.max(-1) - pixels.min(-1)) >= 40).mean())


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs Debian's chromium package)")
def test_headless_chromium_shows_the_frames(preview, tmp_path):
    page = sorted((preview / "movies").glob("*.html"))[0]
    shown = _screenshot(page, tmp_path, "page")
    assert shown.std() > 20, "the screenshot is blank"
    # The same page with its frame images gone: what is left is text on a dark background.
    frames = page.with_suffix("")
    hidden = frames.with_name(frames.name + "-hidden")
    frames.rename(hidden)
    try:
        without = _screenshot(page, tmp_path, "control")
    finally:
        hidden.rename(frames)
    assert _colourful(shown) > 0.08 and _colourful(shown) > 4 * _colourful(without), (
        _colourful(shown), _colourful(without))


def test_frames_at_matches_full_decoding(movies):
    script, mp4 = next(read_movies(movies, decode=False))
    every = decode_mp4(mp4)
    got = frames_at(mp4, [11, 0, 5, 6, 40])
    assert sorted(got) == [0, 5, 6, 11]
    for i, frame in got.items():
        assert np.array_equal(frame, every[i])
    assert evenly_spaced(1331, 6) == [0, 266, 532, 798, 1064, 1330]


def test_contact_sheets_are_deterministic():
    rng = np.random.default_rng(0)
    frames = [(f"0:0{i}", rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)) for i in range(5)]
    a = contact_sheet([("movie", frames)], thumb_width=64, columns=3)
    b = contact_sheet([("movie", frames)], thumb_width=64, columns=3)
    assert a.tobytes() == b.tobytes()
    assert a.width == 6 + 3 * (64 + 6)


def test_the_progress_bar_knows_how_many_movies_there_are(movies, tmp_path, capsys):
    """Issue 12: the preview's progress bar had no total."""
    from moviellm_data.preview import build_preview

    build_preview(movies, tmp_path / "p", progress=True)
    assert "3/3" in capsys.readouterr().err
    build_preview(sorted(movies.glob("*.tar"))[0], tmp_path / "one", progress=True)  # a shard alone: no manifest
    assert "1/1" in capsys.readouterr().err
    build_preview(movies, tmp_path / "two", max_movies=2, progress=True)
    assert "2/2" in capsys.readouterr().err
