"""moviellm push / pull against a loopback Hub, read back with datasets.load_dataset as a user would."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter

import pytest
from tests.publish.publish_support import cli, python
from huggingface_hub import HfApi

from moviellm_data.shards import iter_tar_samples


def _copy(movies, tmp_path):
    return shutil.copytree(movies, tmp_path / "movies")


def _expected(folder) -> dict[str, tuple[str, int, str]]:
    """id -> (title, frames, sha256 of the mp4), read straight from the local shards."""
    out = {}
    for shard in sorted(folder.glob("*.tar")):
        for key, members in iter_tar_samples(shard):
            script = json.loads(members["json"])
            out[key] = (script["title"], len(script["timeline"]), hashlib.sha256(members["mp4"]).hexdigest())
    return out


_LOAD = """
import hashlib, json
from datasets import Video, load_dataset
from huggingface_hub import DatasetCard
from moviellm_data.card import card_features

declared = card_features(DatasetCard.load("org/movies", repo_type="dataset"))
out = {}
for streaming in (False, True):
    ds = load_dataset("org/movies", split="train", streaming=streaming)
    same = ds.features == declared
    ds = ds.cast_column("mp4", Video(decode=False))   # the bytes, with or without torchcodec
    rows = {r["__key__"]: [r["json"]["title"], len(r["json"]["timeline"]), hashlib.sha256(r["mp4"]["bytes"]).hexdigest()]
            for r in ds}
    out["streaming" if streaming else "arrow"] = {"same_features": same, "rows": rows}
print(json.dumps(out))
"""


def test_push_then_load_dataset_returns_every_movie_with_the_card_features(movies, hub, hf_env, tmp_path):
    folder = _copy(movies, tmp_path)
    shards = sorted(p.name for p in folder.glob("*.tar"))
    assert len(shards) >= 2
    result = cli("push", str(folder), "--repo", "org/movies", "--uploader", "commits", "--files-per-commit", "2", "--no-progress", env=hf_env)
    assert result.returncode == 0, result.stderr

    remote = hub.files("dataset", "org/movies")
    # Data files and the card; nothing hidden (.moviellm/ staging, manifest parts, hash cache) left the folder.
    assert set(remote) == {".gitattributes", "README.md", "manifest.jsonl", "pipeline.yaml", "contact_sheet.png", *shards}
    assert (folder / ".moviellm" / "push-hashes.json").exists()
    for name, data in remote.items():
        if name != ".gitattributes":
            assert data == (folder / name).read_bytes(), name
    commits = hub.commits("dataset", "org/movies")
    assert commits[-1].changed == ["README.md"], "the card must be committed last, on its own"
    assert len(commits) >= 1 + 3 + 1  # initial, data in batches of 2 (6 files), card
    assert b'load_dataset("org/movies"' in remote["README.md"] and b"contact_sheet.png" in remote["README.md"]
    token = hf_env["HF_TOKEN"].encode()
    assert token.decode() not in result.stdout + result.stderr
    assert not any(token in data for data in remote.values())

    loaded = python(_LOAD, env=hf_env)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    report = json.loads(loaded.stdout.strip().splitlines()[-1])
    expected = {k: list(v) for k, v in _expected(folder).items()}
    assert len(expected) == 3
    for mode in ("arrow", "streaming"):
        assert report[mode]["same_features"], f"{mode}: features differ from the card's dataset_info"
        assert report[mode]["rows"] == expected, mode


_DECODE_WITH_TORCHCODEC = """
import json
from datasets import load_dataset

for streaming in (False, True):
    ds = load_dataset("org/movies", split="train", streaming=streaming)
    row = next(iter(ds))
    video = row["mp4"]                                   # datasets' Video feature decodes through torchcodec
    frames = video.get_frames_in_range(0, len(video)).data
    print(json.dumps([row["__key__"], len(row["json"]["timeline"]), list(frames.shape)]))
"""


def test_a_hub_dataset_is_decoded_by_datasets_with_torchcodec(movies, hub, hf_env, tmp_path):
    """Issue 12: the path a user with torchcodec (the `video` extra) takes: load_dataset(repo), then row["mp4"]."""
    import importlib.util

    if importlib.util.find_spec("torchcodec") is None:
        pytest.skip("torchcodec is not installed (the `video` extra: torchcodec <= 0.13 beside a CPU torch, with "
                    "FFmpeg 5.1's libraries); CI installs it")
    folder = _copy(movies, tmp_path)
    assert cli("push", str(folder), "--repo", "org/movies", "--uploader", "commits", "--no-progress",
               env=hf_env).returncode == 0
    decoded = python(_DECODE_WITH_TORCHCODEC, env=hf_env)
    assert decoded.returncode == 0, decoded.stderr[-3000:]
    expected = _expected(folder)
    for line in decoded.stdout.strip().splitlines()[-2:]:
        key, timeline, shape = json.loads(line)
        assert timeline == expected[key][1] and shape == [timeline, 3, 96, 128]


def test_an_interrupted_push_resumes_without_resending_what_landed(movies, hub, hf_env, tmp_path):
    folder = _copy(movies, tmp_path)
    hub.fail("commit", status=503, after=1)  # the second commit fails, as if the connection dropped
    first = cli("push", str(folder), "--repo", "org/resume", "--uploader", "commits", "--files-per-commit", "1", "--no-progress", env=hf_env)
    assert first.returncode == 2
    message = first.stderr.strip()
    assert len(message.splitlines()) == 1 and "run the same command again to continue" in message, message
    landed = hub.commits("dataset", "org/resume")
    assert len(landed) == 2 and len(landed[1].changed) == 1  # the initial commit and the first batch
    assert "README.md" not in hub.files("dataset", "org/resume")

    second = cli("push", str(folder), "--repo", "org/resume", "--uploader", "commits", "--files-per-commit", "1", "--no-progress", env=hf_env)
    assert second.returncode == 0, second.stderr
    assert "1 were already there" in second.stdout
    sent = Counter(hub.received_files)
    assert all(n == 1 for n in sent.values()), f"files sent twice: {sent}"
    remote = hub.files("dataset", "org/resume")
    assert {p for p in remote if p != ".gitattributes"} == {p.name for p in folder.iterdir() if not p.name.startswith(".")}


def test_pushing_again_changes_nothing(movies, hub, hf_env, tmp_path):
    folder = _copy(movies, tmp_path)
    assert cli("push", str(folder), "--repo", "org/same", "--no-progress", env=hf_env).returncode == 0
    before = hub.commits("dataset", "org/same")
    again = cli("push", str(folder), "--repo", "org/same", "--no-progress", env=hf_env)
    assert again.returncode == 0, again.stderr
    assert "already up to date" in again.stdout and "nothing was committed" in again.stdout
    assert [c.oid for c in hub.commits("dataset", "org/same")] == [c.oid for c in before]


@pytest.mark.skipif(not hasattr(HfApi, "upload_large_folder"),
                    reason="this huggingface_hub (2.x) removed upload_large_folder; the commits uploader is tested above")
def test_upload_large_folder_path_is_idempotent_too(movies, hub, hf_env, tmp_path):
    folder = _copy(movies, tmp_path)
    args = ("push", str(folder), "--repo", "org/large", "--uploader", "large-folder", "--no-progress")
    assert cli(*args, env=hf_env).returncode == 0
    before = len(hub.commits("dataset", "org/large"))
    assert cli(*args, env=hf_env).returncode == 0
    assert len(hub.commits("dataset", "org/large")) == before
    assert not any(p.startswith(".cache") or p.startswith(".moviellm") for p in hub.files("dataset", "org/large"))


def test_pull_brings_back_the_same_files(movies, hub, hf_env, tmp_path):
    folder = _copy(movies, tmp_path)
    assert cli("push", str(folder), "--repo", "org/pulled", "--no-progress", env=hf_env).returncode == 0
    out = tmp_path / "pulled"
    pulled = cli("pull", "org/pulled", "--out", str(out), env=hf_env)
    assert pulled.returncode == 0, pulled.stderr
    for path in folder.iterdir():
        if not path.name.startswith("."):
            assert (out / path.name).read_bytes() == path.read_bytes(), path.name
    assert cli("pull", "org/pulled", "--out", str(out), env=hf_env).returncode == 0  # rerun: nothing to do
    typo = cli("pull", "org/puled", "--out", str(tmp_path / "typo"), env=hf_env)
    assert typo.returncode == 2
    assert typo.stderr.count("\n") == 1 and "no dataset repository org/puled" in typo.stderr
    assert "did you mean org/pulled?" in typo.stderr


def test_private_push_creates_a_private_repository(movies, hub, hf_env, tmp_path):
    folder = _copy(movies, tmp_path)
    assert cli("push", str(folder), "--repo", "org/private", "--private", "--no-progress", env=hf_env).returncode == 0
    assert hub.repo("dataset", "org/private").private
    without_token = {k: v for k, v in hf_env.items() if k != "HF_TOKEN"}
    denied = cli("pull", "org/private", "--out", str(tmp_path / "p"), env={**without_token, "HF_TOKEN": ""})
    assert denied.returncode == 2 and "if it is private set HF_TOKEN" in denied.stderr


def test_a_card_edited_by_hand_is_uploaded_as_it_is(movies, hub, hf_env, tmp_path):
    folder = _copy(movies, tmp_path)
    card = folder / "README.md"
    edited = card.read_text().replace("# Synthetic movies (moviellm)", "# Our movies\n\nHand-written notes.")
    card.write_text(edited)
    assert cli("push", str(folder), "--repo", "org/edited", "--no-progress", env=hf_env).returncode == 0
    assert hub.files("dataset", "org/edited")["README.md"].decode() == edited
    assert card.read_text() == edited


@pytest.mark.parametrize("case", ["missing folder", "no shards", "repo typo", "repo without org", "broken card",
                                  "unreachable hub"])
def test_bad_input_gets_one_clear_sentence(case, movies, hub, hf_env, tmp_path):
    folder, repo = tmp_path / "movies", "org/bad"
    if case == "missing folder":
        expected = "does not exist"
    elif case == "no shards":
        folder.mkdir()
        expected = "holds no .tar shards"
    else:
        _copy(movies, tmp_path)
    if case == "repo typo":
        repo, expected = "org/my movies", "is not a valid repository id"
    if case == "repo without org":
        repo, expected = "mymovies", "must be ORG/NAME"
    if case == "broken card":
        (folder / "README.md").write_text("---\nlicense: [cc-by-4.0\n---\n# hand-written\n")
        expected = "YAML header"
    extra = []
    if case == "unreachable hub":
        extra, expected = ["--endpoint", "http://127.0.0.1:9"], "cannot reach http://127.0.0.1:9"
    result = cli("push", str(folder), "--repo", repo, "--no-progress", *extra, env=hf_env)
    assert result.returncode == 2
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in line and expected in line, line
    assert line.endswith("."), line
    assert hub.repo("dataset", repo) is None, "nothing may be created when the input is wrong"
