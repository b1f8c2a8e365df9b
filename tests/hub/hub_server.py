"""A Hub-compatible HTTP server on 127.0.0.1 for tests: real sockets, real huggingface_hub clients.

It implements the part of the Hugging Face Hub API that ``huggingface_hub`` (1.x and 2.x), ``datasets``
and ``diffusers`` use to create, upload to, list and download from model and dataset repositories:

- ``POST /api/repos/create``                                   create_repo (409 when it exists)
- ``GET  /api/{type}s/{ns}/{name}[/revision/{rev}]``           repo_info / dataset_info / model_info
- ``GET  /api/{type}s/{ns}/{name}/tree/{rev}[/{path}]``         list_repo_tree (``recursive``; folders are "directory")
- ``POST /api/{type}s/{ns}/{name}/paths-info/{rev}``            get_paths_info
- ``POST /api/{type}s/{ns}/{name}/preupload/{rev}``             every file is "regular"; the remote oid is returned
                                                                so unchanged files are skipped client-side
- ``POST /api/{type}s/{ns}/{name}/commit/{rev}``                create_commit (NDJSON: header, file, deletedFile)
- ``GET  /api/{type}s/{ns}/{name}/commits/{rev}``               list_repo_commits
- ``GET  /api/{type}s/{ns}/{name}/refs``                        list_repo_refs
- ``POST /api/validate-yaml``                                   README metadata check (YAML must parse)
- ``GET|HEAD /[datasets/]{ns}/{name}/resolve/{rev}/{path}``     hf_hub_download / HfFileSystem (ETag,
                                                                X-Repo-Commit, Range, 404 with X-Error-Code)

Usage::

    from hub_server import HubServer          # tests/hub is on sys.path under pytest
    with HubServer() as hub:                   # a free port, a background thread
        env = hub.env(tmp_path)                # HF_ENDPOINT, HF_HOME, HF_TOKEN for a subprocess
        ...
        hub.commits("dataset", "org/name")     # what was committed, for assertions
        hub.fail("commit", status=503, after=1)  # fault injection: the 2nd commit fails

or from a shell: ``python tests/hub/hub_server.py --port 8123``.

``huggingface_hub`` reads ``HF_ENDPOINT`` when it is imported, so either start code that talks to this
server in a subprocess whose environment holds :meth:`HubServer.env`, or pass ``endpoint=hub.url`` to
``HfApi`` / ``hf_hub_download`` explicitly.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

__all__ = ["HubServer", "start_hub_server"]

FAKE_TOKEN = "hf_loopbacktesttoken0000000000000000"
_REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob, which the Hub reports as a regular file's oid and ETag."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Commit:
    oid: str
    message: str
    files: dict[str, str]  # path -> blob sha1 (full snapshot after this commit)
    changed: list[str]  # paths added, changed or deleted by this commit
    created_at: str


@dataclass
class Repo:
    type: str
    id: str
    private: bool
    commits: list[Commit] = field(default_factory=list)

    @property
    def head(self) -> Commit:
        return self.commits[-1]


@dataclass
class _Fault:
    endpoint: str
    status: int
    after: int  # let this many matching requests through first
    times: int  # then fail this many
    seen: int = 0


class HubServer:
    """A threaded loopback Hub. ``start()`` binds a free port; ``url`` is the HF_ENDPOINT to use.

    Args:
        host: interface to bind; keep the default loopback address.
        port: 0 picks a free port.
        require_token_for_private: refuse private repositories to requests without a bearer token.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, require_token_for_private: bool = True) -> None:
        self.repos: dict[tuple[str, str], Repo] = {}
        self.blobs: dict[str, bytes] = {}
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status)
        self.received_files: list[str] = []  # every path whose content arrived in a commit, in order
        self.require_token_for_private = require_token_for_private
        self.lock = threading.RLock()
        self._faults: list[_Fault] = []
        self._httpd = _QuietServer((host, port), _make_handler(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------------------------- lifecycle

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> HubServer:
        if self._thread is None:
            self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                            name="loopback-hub", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def env(self, home: str | Path | None = None, token: str | None = FAKE_TOKEN) -> dict[str, str]:
        """Environment variables that point huggingface_hub / datasets / diffusers at this server.

        ``home`` (recommended) becomes HF_HOME so caches and the stored token of the real user are untouched.
        """
        env = {
            "HF_ENDPOINT": self.url,
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            "HF_HUB_ENABLE_HF_TRANSFER": "0",
            "HF_HUB_DISABLE_XET": "1",
            "HF_HUB_OFFLINE": "0",
            "HF_DATASETS_OFFLINE": "0",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }
        if token:
            env["HF_TOKEN"] = token
        if home is not None:
            env["HF_HOME"] = str(home)
            env["HF_DATASETS_CACHE"] = str(Path(home) / "datasets")
        return env

    # ------------------------------------------------------------------------------ test helpers

    def fail(self, endpoint: str, status: int = 503, after: int = 0, times: int = 1) -> None:
        """Answer the next ``times`` requests to ``endpoint`` (e.g. "commit", "preupload", "resolve") with
        ``status``, after letting ``after`` of them through."""
        with self.lock:
            self._faults.append(_Fault(endpoint, status, after, times))

    def repo(self, repo_type: str, repo_id: str) -> Repo | None:
        with self.lock:
            return self.repos.get((repo_type, repo_id))

    def commits(self, repo_type: str, repo_id: str) -> list[Commit]:
        repo = self.repo(repo_type, repo_id)
        return list(repo.commits) if repo else []

    def files(self, repo_type: str, repo_id: str) -> dict[str, bytes]:
        """The files at the head of a repository, path -> content."""
        repo = self.repo(repo_type, repo_id)
        if repo is None:
            return {}
        with self.lock:
            return {path: self.blobs[sha] for path, sha in repo.head.files.items()}

    # ------------------------------------------------------------------------------- repository ops

    def _fault(self, endpoint: str) -> int | None:
        with self.lock:
            for fault in self._faults:
                if fault.endpoint != endpoint:
                    continue
                fault.seen += 1
                if fault.after < fault.seen <= fault.after + fault.times:
                    return fault.status
        return None

    def _create(self, repo_type: str, repo_id: str, private: bool) -> Repo | None:
        with self.lock:
            if (repo_type, repo_id) in self.repos:
                return None
            gitattributes = b"*.tar filter=lfs diff=lfs merge=lfs -text\n*.mp4 filter=lfs diff=lfs merge=lfs -text\n"
            sha = git_blob_sha1(gitattributes)
            self.blobs[sha] = gitattributes
            repo = Repo(repo_type, repo_id, private)
            repo.commits.append(Commit(_new_oid(), "initial commit", {".gitattributes": sha}, [".gitattributes"], _now()))
            self.repos[(repo_type, repo_id)] = repo
            return repo

    def _commit(self, repo: Repo, lines: list[dict]) -> Commit:
        with self.lock:
            files = dict(repo.head.files)
            message, changed = "", []
            for line in lines:
                key, value = line.get("key"), line.get("value", {})
                if key == "header":
                    message = value.get("summary", "")
                    parent = value.get("parentCommit")
                    if parent and parent != repo.head.oid:
                        raise _HttpError(412, "A commit has happened since. Please refresh and try again.")
                elif key == "file":
                    if value.get("encoding", "base64") != "base64":
                        raise _HttpError(400, f"unsupported encoding {value.get('encoding')}")
                    data = base64.b64decode(value["content"])
                    sha = git_blob_sha1(data)
                    self.blobs[sha] = data
                    self.received_files.append(value["path"])
                    if files.get(value["path"]) != sha:
                        files[value["path"]] = sha
                        changed.append(value["path"])
                elif key == "deletedFile":
                    if value["path"] not in files:
                        raise _HttpError(404, "A file with this name doesn't exist", code="EntryNotFound")
                    del files[value["path"]]
                    changed.append(value["path"])
                elif key == "deletedFolder":
                    prefix = value["path"].rstrip("/") + "/"
                    for path in [p for p in files if p.startswith(prefix)]:
                        del files[path]
                        changed.append(path)
                elif key == "lfsFile":
                    raise _HttpError(400, "this loopback Hub answers 'regular' to every preupload; LFS is not served")
                else:
                    raise _HttpError(400, f"unknown commit operation {key!r}")
            commit = Commit(_new_oid(), message, files, changed, _now())
            repo.commits.append(commit)
            return commit

    def _snapshot(self, repo: Repo, revision: str) -> Commit:
        revision = unquote(revision)
        if revision in ("main", "HEAD", "refs/heads/main"):
            return repo.head
        for commit in repo.commits:
            if commit.oid == revision or (len(revision) >= 7 and commit.oid.startswith(revision)):
                return commit
        raise _HttpError(404, f"Invalid rev id: {revision}", code="RevisionNotFound")

    def _tree(self, snapshot: Commit, prefix: str, recursive: bool) -> list[dict]:
        prefix = prefix.strip("/")
        if prefix and prefix in snapshot.files:
            raise _HttpError(400, f"{prefix} is a file, not a folder")
        base = prefix + "/" if prefix else ""
        entries: dict[str, dict] = {}
        for path, sha in sorted(snapshot.files.items()):
            if not path.startswith(base):
                continue
            rest = path[len(base):]
            parts = rest.split("/")
            # Every folder between the prefix and the file; only the first level unless recursive.
            for depth in range(1, len(parts)):
                if depth > 1 and not recursive:
                    break
                folder = base + "/".join(parts[:depth])
                entries.setdefault(folder, {"type": "directory", "oid": _tree_oid(folder), "size": 0, "path": folder})
            if len(parts) == 1 or recursive:
                entries[path] = self._file_entry(path, sha)
        if prefix and not entries:
            raise _HttpError(404, f"{prefix} does not exist", code="EntryNotFound")
        return [entries[k] for k in sorted(entries)]

    def _file_entry(self, path: str, sha: str) -> dict:
        return {"type": "file", "oid": sha, "size": len(self.blobs[sha]), "path": path}

    def _info(self, repo: Repo, snapshot: Commit) -> dict:
        card_data = None
        if "README.md" in snapshot.files:
            card_data = _front_matter(self.blobs[snapshot.files["README.md"]].decode("utf-8", "replace"))
        return {
            "_id": hashlib.md5(repo.id.encode()).hexdigest()[:24],
            "id": repo.id,
            "author": repo.id.split("/")[0],
            "sha": snapshot.oid,
            "private": repo.private,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": (card_data or {}).get("tags", []) if isinstance(card_data, dict) else [],
            "cardData": card_data,
            "createdAt": repo.commits[0].created_at,
            "lastModified": snapshot.created_at,
            "siblings": [{"rfilename": p} for p in sorted(snapshot.files)],
            "usedStorage": sum(len(self.blobs[s]) for s in snapshot.files.values()),
        }


class _QuietServer(ThreadingHTTPServer):
    """Clients that drop a kept-alive connection are normal; do not print their tracebacks."""

    def handle_error(self, request, client_address) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class _HttpError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _new_oid() -> str:
    return hashlib.sha1(uuid.uuid4().bytes).hexdigest()


def _tree_oid(path: str) -> str:
    return hashlib.sha1(f"tree:{path}".encode()).hexdigest()


def _front_matter(text: str) -> dict | None:
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, re.S)
    if not match:
        return None
    try:
        data = yaml.safe_load(match.group(1))
    except yaml.YAMLError:
        return None
    return data if isinstance(data, dict) else None


_API = re.compile(r"^/api/(models|datasets|spaces)/([^/]+/[^/]+)(?:/(.*))?$")
_RESOLVE = re.compile(r"^/(?:(datasets|spaces)/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")


def _make_handler(hub: HubServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "LoopbackHub/1.0"

        def log_message(self, *args) -> None:  # keep test output clean
            pass

        # --------------------------------------------------------------------------- plumbing

        def _send(self, status: int, body: bytes = b"", content_type: str = "application/json",
                  headers: dict[str, str] | None = None, head: bool = False) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if not head:
                self.wfile.write(body)
            with hub.lock:
                hub.requests.append((self.command, self.path, status))

        def _json(self, status: int, payload, headers: dict[str, str] | None = None) -> None:
            self._send(status, json.dumps(payload).encode(), headers=headers)

        def _error(self, err: _HttpError, head: bool = False) -> None:
            headers = {"X-Error-Message": err.message}
            if err.code:
                headers["X-Error-Code"] = err.code
            self._send(err.status, json.dumps({"error": err.message}).encode(), headers=headers, head=head)

        def _body(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _authorised(self) -> bool:
            auth = self.headers.get("Authorization", "")
            return auth.startswith("Bearer ") and len(auth) > len("Bearer ")

        def _repo(self, repo_type: str, repo_id: str) -> Repo:
            repo = hub.repo(repo_type, repo_id)
            if repo is None or (repo.private and hub.require_token_for_private and not self._authorised()):
                raise _HttpError(404, "Repository not found", code="RepoNotFound")
            return repo

        def _dispatch(self, head: bool = False) -> None:
            url = urlsplit(self.path)
            path, query = unquote(url.path), parse_qs(url.query)
            try:
                body = self._body() if self.command in ("POST", "PUT") else b""
                self._route(path, query, body, head)
            except _HttpError as err:
                self._error(err, head=head)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def do_GET(self) -> None:  # noqa: N802 - http.server naming
            self._dispatch()

        def do_HEAD(self) -> None:  # noqa: N802
            self._dispatch(head=True)

        def do_POST(self) -> None:  # noqa: N802
            self._dispatch()

        def do_PUT(self) -> None:  # noqa: N802
            self._dispatch()

        # ----------------------------------------------------------------------------- routes

        def _route(self, path: str, query: dict, body: bytes, head: bool) -> None:
            if path == "/api/repos/create" and self.command == "POST":
                return self._create_repo(body)
            if path == "/api/validate-yaml" and self.command == "POST":
                return self._validate_yaml(body)
            if path in ("/api/whoami-v2", "/api/whoami"):
                if not self._authorised():
                    raise _HttpError(401, "Invalid credentials in Authorization header")
                return self._json(200, {"type": "user", "name": "tester", "fullname": "Tester", "orgs": [],
                                        "auth": {"accessToken": {"role": "write", "displayName": "test"}}})
            if path in ("/api/models", "/api/datasets", "/api/spaces") and self.command == "GET":
                return self._list_repos(_REPO_TYPES[path.rsplit("/", 1)[1]], query)
            match = _RESOLVE.match(path)
            if match and self.command in ("GET", "HEAD"):
                kind, repo_id, revision, file_path = match.groups()
                return self._resolve(_REPO_TYPES.get(f"{kind}", "model") if kind else "model", repo_id, revision,
                                     file_path, head)
            match = _API.match(path)
            if not match:
                raise _HttpError(404, f"no route for {self.command} {path}")
            repo_type, repo_id, rest = _REPO_TYPES[match.group(1)], match.group(2), match.group(3) or ""
            if rest.startswith("preupload/") and self.command == "POST":
                return self._preupload(repo_type, repo_id, rest[len("preupload/"):], body)
            if rest.startswith("commit/") and self.command == "POST":
                return self._commit(repo_type, repo_id, rest[len("commit/"):], body)
            if rest.startswith("paths-info/") and self.command == "POST":
                return self._paths_info(repo_type, repo_id, rest[len("paths-info/"):], body)
            if self.command not in ("GET", "HEAD"):
                raise _HttpError(404, f"no route for {self.command} {path}")
            repo = self._repo(repo_type, repo_id)
            if rest == "" or rest.startswith("revision/"):
                revision = rest[len("revision/"):] if rest else "main"
                with hub.lock:
                    return self._json(200, hub._info(repo, hub._snapshot(repo, revision)))
            if rest.startswith("tree/"):
                revision, _, prefix = rest[len("tree/"):].partition("/")
                recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
                with hub.lock:
                    return self._json(200, hub._tree(hub._snapshot(repo, revision), prefix, recursive))
            if rest.startswith("commits/"):
                with hub.lock:
                    upto = hub._snapshot(repo, rest[len("commits/"):])
                    history = repo.commits[: repo.commits.index(upto) + 1]
                    return self._json(200, [
                        {"id": c.oid, "title": c.message, "message": "", "date": c.created_at,
                         "authors": [{"user": "tester"}]}
                        for c in reversed(history)
                    ])
            if rest == "refs":
                return self._json(200, {"branches": [{"name": "main", "ref": "refs/heads/main",
                                                      "targetCommit": repo.head.oid}], "converts": [], "tags": []})
            raise _HttpError(404, f"no route for {self.command} {path}", code="EntryNotFound")

        def _list_repos(self, repo_type: str, query: dict) -> None:
            author = query.get("author", [None])[0]
            search = query.get("search", [""])[0].lower()
            with hub.lock:
                repos = [r for (t, _), r in sorted(hub.repos.items()) if t == repo_type
                         and (author is None or r.id.split("/")[0] == author) and search in r.id.lower()
                         and (not r.private or self._authorised())]
                self._json(200, [{"id": r.id, "_id": r.id, "private": r.private, "sha": r.head.oid,
                                  "lastModified": r.head.created_at} for r in repos])

        def _create_repo(self, body: bytes) -> None:
            if (status := hub._fault("create")) is not None:
                raise _HttpError(status, "injected failure")
            if not self._authorised():
                raise _HttpError(401, "Invalid credentials in Authorization header")
            payload = json.loads(body or b"{}")
            name, org = payload.get("name", ""), payload.get("organization")
            repo_type = payload.get("type") or "model"
            repo_id = f"{org}/{name}" if org else f"tester/{name}"
            if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo_id):
                raise _HttpError(400, f"invalid repository name {repo_id}")
            # huggingface_hub 1.x sends "private": bool, 2.x sends "visibility": "public"|"private"|...
            private = bool(payload.get("private")) or payload.get("visibility") not in (None, "public")
            repo = hub._create(repo_type, repo_id, private)
            prefix = "" if repo_type == "model" else f"{repo_type}s/"
            url = f"{hub.url}/{prefix}{repo_id}"
            if repo is None:  # the Hub answers 409 with the existing repository's url
                return self._json(409, {"error": "You already created this repo", "url": url},
                                  headers={"X-Error-Message": "You already created this repo"})
            self._json(200, {"url": url, "name": repo_id, "id": repo_id})

        def _validate_yaml(self, body: bytes) -> None:
            content = json.loads(body or b"{}").get("content", "")
            match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", content, re.S)
            if match:
                try:
                    data = yaml.safe_load(match.group(1))
                except yaml.YAMLError as err:
                    return self._json(400, {"errors": [{"message": f"YAML does not parse: {err}"}]})
                if data is not None and not isinstance(data, dict):
                    return self._json(400, {"errors": [{"message": "metadata must be a mapping"}]})
            self._json(200, {"errors": [], "warnings": []})

        def _preupload(self, repo_type: str, repo_id: str, revision: str, body: bytes) -> None:
            if (status := hub._fault("preupload")) is not None:
                raise _HttpError(status, "injected failure")
            repo = self._repo(repo_type, repo_id)
            payload = json.loads(body or b"{}")
            with hub.lock:
                snapshot = hub._snapshot(repo, revision)
                files = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                          "oid": snapshot.files.get(f["path"])} for f in payload.get("files", [])]
            self._json(200, {"files": files, "commitOid": snapshot.oid})

        def _commit(self, repo_type: str, repo_id: str, revision: str, body: bytes) -> None:
            if (status := hub._fault("commit")) is not None:
                raise _HttpError(status, "injected failure")
            repo = self._repo(repo_type, repo_id)
            if unquote(revision) not in ("main", "refs/heads/main"):
                raise _HttpError(400, "this loopback Hub commits to main only")
            try:
                lines = [json.loads(line) for line in body.splitlines() if line.strip()]
            except json.JSONDecodeError:
                raise _HttpError(400, "commit payload is not NDJSON") from None
            commit = hub._commit(repo, lines)
            prefix = "" if repo_type == "model" else f"{repo_type}s/"
            self._json(200, {"commitUrl": f"{hub.url}/{prefix}{repo_id}/commit/{commit.oid}",
                             "commitOid": commit.oid, "success": True, "pullRequestUrl": None})

        def _paths_info(self, repo_type: str, repo_id: str, revision: str, body: bytes) -> None:
            repo = self._repo(repo_type, repo_id)
            content_type = self.headers.get("Content-Type", "")
            if "json" in content_type:
                paths = json.loads(body or b"{}").get("paths", [])
            else:
                paths = parse_qs(body.decode()).get("paths", [])
            if isinstance(paths, str):
                paths = [paths]
            out = []
            with hub.lock:
                snapshot = hub._snapshot(repo, revision)
                for p in paths:
                    p = p.strip("/")
                    if p in snapshot.files:
                        out.append(hub._file_entry(p, snapshot.files[p]))
                    elif any(f.startswith(p + "/") for f in snapshot.files) or p == "":
                        out.append({"type": "directory", "oid": _tree_oid(p), "size": 0, "path": p})
            self._json(200, out)

        def _resolve(self, repo_type: str, repo_id: str, revision: str, file_path: str, head: bool) -> None:
            if (status := hub._fault("resolve")) is not None:
                raise _HttpError(status, "injected failure")
            repo = self._repo(repo_type, repo_id)
            with hub.lock:
                snapshot = hub._snapshot(repo, revision)
                sha = snapshot.files.get(file_path)
                if sha is None:
                    raise _HttpError(404, "Entry not found", code="EntryNotFound")
                data = hub.blobs[sha]
            headers = {"ETag": f'"{sha}"', "X-Repo-Commit": snapshot.oid, "Accept-Ranges": "bytes",
                       "Last-Modified": time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime())}
            status, body = 200, data
            ranges = self.headers.get("Range")
            if ranges and (m := re.fullmatch(r"bytes=(\d*)-(\d*)", ranges.strip())):
                start_s, end_s = m.groups()
                if start_s == "":
                    start, end = max(0, len(data) - int(end_s)), len(data) - 1
                else:
                    start = int(start_s)
                    end = min(int(end_s), len(data) - 1) if end_s else len(data) - 1
                if start >= len(data) and len(data) > 0:
                    return self._send(416, b"", headers={"Content-Range": f"bytes */{len(data)}"}, head=head)
                status, body = 206, data[start:end + 1]
                headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            self._send(status, body, content_type="application/octet-stream", headers=headers, head=head)

    return Handler


def start_hub_server(host: str = "127.0.0.1", port: int = 0) -> HubServer:
    """Start a loopback Hub in a background thread and return it (``.url``, ``.env()``, ``.stop()``)."""
    return HubServer(host, port).start()


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Serve a loopback Hugging Face Hub for tests.")
    parser.add_argument("--port", type=int, default=0, help="Port (0 = any free port). Default: 0.")
    args = parser.parse_args()
    server = start_hub_server(port=args.port)
    print(server.url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()
