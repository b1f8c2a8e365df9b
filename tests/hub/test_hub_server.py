"""The loopback Hub answers huggingface_hub's real client the way the Hub does (endpoint= passed in-process)."""

from __future__ import annotations

import httpx2 as httpx
import pytest
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError
from huggingface_hub.hf_api import RepoFile, RepoFolder


def _folder(tmp_path):
    root = tmp_path / "src"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "README.md").write_text("---\nlicense: mit\ntags: [x]\n---\n# hello\n")
    (root / "a.bin").write_bytes(bytes(range(256)) * 8)
    (root / "sub" / "b.txt").write_text("b")
    (root / "sub" / "deeper" / "c.txt").write_text("c")
    return root


def test_upload_list_download_roundtrip(hub, token, tmp_path):
    api = HfApi(endpoint=hub.url, token=token)
    url = api.create_repo("org/model-x", exist_ok=True)
    assert "org/model-x" in str(url)
    api.create_repo("org/model-x", exist_ok=True)  # 409 answered like the Hub: exist_ok passes
    api.upload_folder(repo_id="org/model-x", folder_path=_folder(tmp_path), commit_message="add files")

    top = list(api.list_repo_tree("org/model-x"))
    assert {e.path for e in top} == {".gitattributes", "README.md", "a.bin", "sub"}
    assert isinstance(next(e for e in top if e.path == "sub"), RepoFolder)
    deep = {e.path: e for e in api.list_repo_tree("org/model-x", recursive=True)}
    assert isinstance(deep["sub/deeper/c.txt"], RepoFile) and isinstance(deep["sub/deeper"], RepoFolder)
    assert api.model_info("org/model-x").card_data["license"] == "mit"

    path = hf_hub_download("org/model-x", "sub/deeper/c.txt", endpoint=hub.url, token=token, cache_dir=tmp_path / "c")
    assert open(path).read() == "c"
    snap = snapshot_download("org/model-x", endpoint=hub.url, token=token, local_dir=tmp_path / "snap")
    assert (tmp_path / "snap" / "a.bin").read_bytes() == bytes(range(256)) * 8
    assert snap == str(tmp_path / "snap")
    assert [c.message for c in hub.commits("model", "org/model-x")][-1] == "add files"


def test_missing_things_raise_the_hub_errors(hub, token, tmp_path):
    api = HfApi(endpoint=hub.url, token=token)
    api.create_repo("org/ds", repo_type="dataset")
    with pytest.raises(RepositoryNotFoundError):
        api.dataset_info("org/nope")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("org/ds", "missing.txt", repo_type="dataset", endpoint=hub.url, token=token, cache_dir=tmp_path)


def test_resolve_honours_range_and_reports_commit(hub, token, tmp_path):
    api = HfApi(endpoint=hub.url, token=token)
    api.create_repo("org/r")
    api.upload_file(path_or_fileobj=b"0123456789", path_in_repo="digits.txt", repo_id="org/r")
    response = httpx.get(f"{hub.url}/org/r/resolve/main/digits.txt", headers={"Range": "bytes=2-4"})
    assert response.status_code == 206 and response.content == b"234"
    assert response.headers["X-Repo-Commit"] == hub.commits("model", "org/r")[-1].oid
    assert response.headers["ETag"].strip('"') == hub.repo("model", "org/r").head.files["digits.txt"]


def test_private_repositories_need_a_token(hub, token):
    HfApi(endpoint=hub.url, token=token).create_repo("org/secret", private=True)
    assert HfApi(endpoint=hub.url, token=token).model_info("org/secret").private is True
    with pytest.raises(RepositoryNotFoundError):
        HfApi(endpoint=hub.url, token=False).model_info("org/secret")


def test_injected_faults_fail_the_requested_call_only(hub, token):
    api = HfApi(endpoint=hub.url, token=token)
    api.create_repo("org/f")
    hub.fail("commit", status=503, after=1)
    api.upload_file(path_or_fileobj=b"1", path_in_repo="one.txt", repo_id="org/f")
    with pytest.raises(Exception) as err:
        api.upload_file(path_or_fileobj=b"2", path_in_repo="two.txt", repo_id="org/f")
    assert getattr(getattr(err.value, "response", None), "status_code", None) == 503
    api.upload_file(path_or_fileobj=b"3", path_in_repo="three.txt", repo_id="org/f")
    assert set(hub.files("model", "org/f")) == {".gitattributes", "one.txt", "three.txt"}


def test_env_points_a_subprocess_at_the_server(hub, tmp_path):
    import subprocess
    import sys

    code = "from huggingface_hub import constants; print(constants.ENDPOINT)"
    out = subprocess.run([sys.executable, "-c", code], env={**hub.env(tmp_path), "PATH": ""}, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == hub.url
