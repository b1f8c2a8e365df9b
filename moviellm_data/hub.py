"""Publishing dataset and model folders on the Hugging Face Hub, and fetching datasets back.

``push_model`` publishes a saved model folder (config, weights, processor, the card with its
``model-index``) the same way, as a model repository.

``push_dataset`` creates the dataset repository (if needed), uploads the data files (shards, manifest,
recipe, contact sheet) and then, last, the card, so a reader never sees a card describing files that
are not there yet. It is resumable and idempotent:

- with huggingface_hub 1.x it uses ``HfApi.upload_large_folder`` (multi-threaded, retries, many
  commits, its own resume state in ``DIR/.cache/huggingface``). 1.3x marks it deprecated in favour of
  ``upload_folder``, whose resumable multi-commit path exists only with the optional ``hf_xet``;
- huggingface_hub 2.x removed ``upload_large_folder``, so there (or with ``uploader="commits"``) the
  files are committed in batches of ``files_per_commit``: every batch that landed stays, and a rerun
  compares local and remote hashes (sha256 for LFS files, git blob ids for regular ones) and sends only
  what is missing. Pushing an unchanged folder again makes no commit at all, with either uploader.

Nothing under a hidden path is uploaded: ``.moviellm/`` (staging, per-rank manifests, locks) and
``.cache/huggingface`` stay local. Tokens come from ``HF_TOKEN`` or ``hf auth login``; they are never
taken on the command line and never appear in a message.

``HF_ENDPOINT`` is read by huggingface_hub when it is imported; ``endpoint=`` overrides it per call.
"""

from __future__ import annotations

import difflib
import fnmatch
import glob
import hashlib
import json
import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .card import CardError, is_unedited, load_card
from .errors import ConfigError, MovieLLMError
from .fileio import atomic_write_text
from .folder import CARD_NAME, MANIFEST_NAME, dataset_kind
from .kinds import refresh_card

logger = logging.getLogger(__name__)

REPO_TYPE = "dataset"
DEFAULT_FILES_PER_COMMIT = 50
# Regular (non-LFS) files travel inside the commit request itself; keep one request a sane size.
DEFAULT_COMMIT_BYTES = 2_000_000_000
HASH_CACHE = ".moviellm/push-hashes.json"
UPLOADERS = ("auto", "large-folder", "commits")


class HubError(MovieLLMError):
    """The Hub refused or could not complete a request."""


@dataclass
class PushResult:
    """What :func:`push_dataset` did."""

    repo_id: str
    url: str
    uploaded: list[str] = field(default_factory=list)  # files sent this time (data and card)
    unchanged: list[str] = field(default_factory=list)  # files already on the Hub with the same content
    commits: int = 0
    uploader: str = "commits"
    stale: list[str] = field(default_factory=list)  # data files on the Hub that this folder does not have
    warnings: list[str] = field(default_factory=list)
    remote_files: list[str] = field(default_factory=list)  # what the repository holds after the push


# ---------------------------------------------------------------------------------------- repo ids


def parse_repo_id(text: str, option: str = "--repo") -> str:
    """Check ``ORG/NAME`` locally and return it stripped; one sentence when it cannot be a repository id."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    repo_id = (text or "").strip()
    for prefix in ("https://huggingface.co/datasets/", "hf://datasets/", "datasets/"):
        if repo_id.startswith(prefix):
            repo_id = repo_id[len(prefix):].strip("/")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ConfigError(f"{option} must be ORG/NAME (an organisation or user, a slash, a dataset name), got {text!r}.")
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise ConfigError(
            f"{option} {text!r} is not a valid repository id: use letters, digits, '-', '_' and '.', "
            "no spaces, no '--' or '..', at most 96 characters."
        ) from None
    return repo_id


# ------------------------------------------------------------------------------------- local files


#: What a training run leaves beside the saved model and a model repository should not get: resumable checkpoints
#: (optimizer states: several times the model's size), the Trainer's pickled arguments, per-rank sample logs.
TRAINING_LEFTOVERS = ("checkpoint-*", "training_args.bin", "samples-rank*.jsonl")


def publishable_files(root: str | Path, exclude: Sequence[str] = ()) -> list[str]:
    """Files of a dataset (or model) folder that belong on the Hub, as sorted relative POSIX paths, card excluded.

    Hidden paths (``.moviellm/``, ``.cache/``, temporary ``.*.tmp`` files) and ``*.tmp`` stay local, and so does
    anything whose first path part matches one of the ``exclude`` glob patterns.
    """
    root = Path(root)
    files = []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or path.name.endswith(".tmp"):
            continue
        if any(fnmatch.fnmatch(rel.parts[0], pattern) for pattern in exclude):
            continue
        if path.is_file() and not path.is_symlink() and rel.as_posix() != CARD_NAME:
            files.append(rel.as_posix())
    return sorted(files)


def check_dataset_folder(root: str | Path) -> Path:
    """A folder that can be pushed: it exists, holds tar shards and a card that parses."""
    root = Path(root)
    if not root.exists():
        raise ConfigError(f"dataset folder {root} does not exist; give a folder made by `moviellm generate`.")
    if not root.is_dir():
        raise ConfigError(f"{root} is a file, not a dataset folder; give a folder made by `moviellm generate`.")
    if not any(root.glob("*.tar")):
        raise ConfigError(f"{root} holds no .tar shards, so there is nothing to publish; "
                          f"run `moviellm generate --out {root}` first.")
    return root


class _HashCache:
    """sha256 and git blob sha1 of local files, remembered by (size, mtime) so a rerun does not rehash."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = root / HASH_CACHE
        try:
            self.entries: dict = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self.entries = {}

    def digests(self, rel: str) -> tuple[str, str]:
        stat = (self.root / rel).stat()
        key = [stat.st_size, stat.st_mtime_ns]
        cached = self.entries.get(rel)
        if cached and cached.get("stat") == key:
            return cached["sha256"], cached["sha1"]
        sha256 = hashlib.sha256()
        sha1 = hashlib.sha1(b"blob %d\0" % stat.st_size)
        with open(self.root / rel, "rb") as fh:
            while chunk := fh.read(1 << 22):
                sha256.update(chunk)
                sha1.update(chunk)
        self.entries[rel] = {"stat": key, "sha256": sha256.hexdigest(), "sha1": sha1.hexdigest()}
        return self.entries[rel]["sha256"], self.entries[rel]["sha1"]

    def save(self) -> None:
        if not self.path.parent.is_dir():
            return  # not a moviellm folder: nowhere hidden to keep the cache
        atomic_write_text(self.path, json.dumps(self.entries, sort_keys=True))


def _same_as_remote(cache: _HashCache, rel: str, remote) -> bool:
    """Does the Hub already hold this exact file? (LFS files by sha256, regular ones by git blob id.)"""
    if remote is None or remote.size != (cache.root / rel).stat().st_size:
        return False
    sha256, sha1 = cache.digests(rel)
    if getattr(remote, "lfs", None) is not None:
        return remote.lfs.sha256 == sha256
    return remote.blob_id == sha1


# ------------------------------------------------------------------------------------ error wording


def _explain(err: Exception, repo_id: str, endpoint: str, doing: str, repo_type: str = REPO_TYPE) -> MovieLLMError:
    """Turn a huggingface_hub / network error into one sentence (never quoting headers or tokens)."""
    from huggingface_hub import errors as hf_errors

    if isinstance(err, hf_errors.RepositoryNotFoundError):
        suggestion = _did_you_mean(repo_id, endpoint) if repo_type == "dataset" else ""
        return HubError(f"there is no {repo_type} repository {repo_id} on {endpoint}{suggestion}; "
                        "check the name, and if it is private set HF_TOKEN or run `hf auth login`.")
    if isinstance(err, hf_errors.RevisionNotFoundError):
        return HubError(f"{repo_type} repository {repo_id} has no such revision; check --revision.")
    response = getattr(err, "response", None)
    status = getattr(response, "status_code", None)
    if status in (401, 403):
        return HubError(f"{endpoint} refused {doing} {repo_id} ({status}): set HF_TOKEN or run `hf auth login` "
                        "with a token that can write to that organisation.")
    if status is None and "connect" in type(err).__name__.lower():
        return HubError(f"cannot reach {endpoint} ({_first_line(err)}); check the network, HF_ENDPOINT or --endpoint, "
                        "then run the same command again.")
    reason = f"the Hub answered {status}" if status else f"{type(err).__name__}: {_first_line(err)}"
    return HubError(f"{doing} {repo_id} on {endpoint} stopped ({reason}); run the same command again to continue.")


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else "no detail"


def _did_you_mean(repo_id: str, endpoint: str) -> str:
    """' (did you mean org/name?)' when the organisation has a dataset with a close name."""
    try:
        from huggingface_hub import HfApi

        org, name = repo_id.split("/")
        names = [d.id for d in HfApi(endpoint=endpoint).list_datasets(author=org, limit=500)]
        close = difflib.get_close_matches(repo_id, names, n=1, cutoff=0.6)
        return f" (did you mean {close[0]}?)" if close else ""
    except Exception:  # a suggestion is a courtesy; never let it hide the real error
        return ""


def _endpoint(endpoint: str | None) -> str:
    from huggingface_hub import constants

    return (endpoint or constants.ENDPOINT).rstrip("/")


# -------------------------------------------------------------------------------------------- push


def push_dataset(folder: str | Path, repo_id: str, private: bool = False, endpoint: str | None = None,
                 files_per_commit: int = DEFAULT_FILES_PER_COMMIT, uploader: str = "auto",
                 progress: bool = True, contact_sheet: bool = True) -> PushResult:
    """Publish a dataset folder as the Hub dataset ``repo_id``; safe to rerun after an interruption.

    Args:
        folder: a dataset folder (``moviellm generate`` or one of the builders in ``moviellm_data.builders``).
        repo_id: ``ORG/NAME``.
        private: create the repository private (an existing repository keeps its visibility).
        endpoint: the Hub to talk to; default ``HF_ENDPOINT`` or huggingface.co.
        files_per_commit: batch size of the commit uploader (smaller batches resume at a finer grain).
        uploader: "auto" (``upload_large_folder`` where huggingface_hub has it, else "commits"),
            "large-folder" or "commits".
        contact_sheet: draw ``contact_sheet.png`` for the card (movie datasets).
    """
    root = check_dataset_folder(folder)
    repo_id = parse_repo_id(repo_id)
    uploader = _choose_uploader(uploader, files_per_commit)
    # The card is made (and checked) before anything is uploaded: a card that does not parse stops here.
    _prepare_card(root, repo_id, contact_sheet)
    load_card(root / CARD_NAME)
    result = _push_folder(root, repo_id, "dataset", private, endpoint, files_per_commit, uploader, progress)
    result.stale = sorted(p for p in result.remote_files if p.endswith(".tar") and p not in set(publishable_files(root)))
    return result


def is_model_folder(folder: str | Path) -> bool:
    """A saved model (``config.json``, no dataset shards), which ``moviellm push`` publishes as a model repository."""
    root = Path(folder)
    return (root / "config.json").is_file() and not any(root.glob("*.tar"))


def push_model(folder: str | Path, repo_id: str, private: bool = False, endpoint: str | None = None,
               files_per_commit: int = DEFAULT_FILES_PER_COMMIT, uploader: str = "auto",
               progress: bool = True) -> PushResult:
    """Publish a saved model folder (``save_pretrained`` output and its card) as the Hub model ``repo_id``.

    Resumable and idempotent like :func:`push_dataset`; the card (README.md, with the ``model-index``
    that ``moviellm eval --model-card`` fills) is checked before anything is sent and committed last.
    A folder without a card gets one from the model-card template. What training leaves beside the model
    (:data:`TRAINING_LEFTOVERS`: ``checkpoint-N/`` folders, ``training_args.bin``, sample logs) stays local.
    """
    from .card import write_model_card

    root = Path(folder)
    if not is_model_folder(root):
        raise ConfigError(f"{root} is not a saved model folder (it needs config.json, as save_pretrained writes it); "
                          "give the folder the model was saved to.")
    repo_id = parse_repo_id(repo_id)
    uploader = _choose_uploader(uploader, files_per_commit)
    if not (root / CARD_NAME).exists():
        write_model_card(root, repo_id.split("/")[-1], repo_id=repo_id)
    load_card(root / CARD_NAME, kind="model")
    return _push_folder(root, repo_id, "model", private, endpoint, files_per_commit, uploader, progress)


def _choose_uploader(uploader: str, files_per_commit: int) -> str:
    from huggingface_hub import HfApi

    if files_per_commit < 1:
        raise ConfigError(f"--files-per-commit must be at least 1, got {files_per_commit}.")
    if uploader not in UPLOADERS:
        raise ConfigError(f"uploader must be one of {', '.join(UPLOADERS)}, got {uploader!r}.")
    if uploader == "auto":
        uploader = "large-folder" if hasattr(HfApi, "upload_large_folder") else "commits"
    if uploader == "large-folder" and not hasattr(HfApi, "upload_large_folder"):
        raise ConfigError("this huggingface_hub has no upload_large_folder (removed in 2.x); use the commits uploader.")
    return uploader


def _push_folder(root: Path, repo_id: str, repo_type: str, private: bool, endpoint: str | None, files_per_commit: int,
                 uploader: str, progress: bool) -> PushResult:
    """Create the repository if needed, upload the folder's files, then the card on its own."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    endpoint = _endpoint(endpoint)
    api = HfApi(endpoint=endpoint)
    url = f"{endpoint}/datasets/{repo_id}" if repo_type == "dataset" else f"{endpoint}/{repo_id}"
    result = PushResult(repo_id=repo_id, url=url, uploader=uploader)
    doing = "the upload to"
    try:
        doing = "creating"
        api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
        info = api.repo_info(repo_id, repo_type=repo_type)
        if private and not info.private:
            result.warnings.append(f"{repo_id} already exists and is public; it stays public.")
        doing = "the upload to"
        files = publishable_files(root, exclude=TRAINING_LEFTOVERS if repo_type == "model" else ())
        cache = _HashCache(root)
        try:
            if uploader == "large-folder":
                _upload_large_folder(api, root, repo_id, files, private, result, repo_type=repo_type)
            else:
                _upload_in_commits(api, root, repo_id, files, cache, files_per_commit, result, progress,
                                   message=f"Upload {repo_type} files", repo_type=repo_type)
            # Card last, on its own: readers never see a card that promises files still on their way.
            _upload_in_commits(api, root, repo_id, [CARD_NAME], cache, 1, result, progress=False,
                               message=f"Update {repo_type} card", repo_type=repo_type)
        finally:
            cache.save()
        result.remote_files = sorted(_remote_files(api, repo_id, repo_type))
    except MovieLLMError:
        raise
    except (HfHubHTTPError, OSError, ValueError) as err:
        raise _explain(err, repo_id, endpoint, doing, repo_type) from None
    except Exception as err:  # httpx/httpx2 transport errors: the class differs between hub 1.x and 2.x
        if type(err).__module__.split(".")[0] in ("httpx", "httpx2", "httpcore", "httpcore2"):
            raise _explain(err, repo_id, endpoint, doing, repo_type) from None
        raise
    return result


def _prepare_card(root: Path, repo_id: str, contact_sheet: bool) -> None:
    """Rewrite the card with the repository id (and contact sheet); keep and check a hand-edited one."""
    card_path = root / CARD_NAME
    current = card_path.read_text(encoding="utf-8", errors="replace") if card_path.exists() else None
    if current is not None and not is_unedited(current):
        logger.info("%s was edited by hand; it is uploaded as it is.", card_path)
        return
    kind = dataset_kind(root)
    if kind == "movies" and not (root / MANIFEST_NAME).exists():
        if current is None:
            raise CardError(f"{root} has neither a card (README.md) nor a manifest to write one from; "
                            f"run `moviellm generate --out {root}` first.")
        return
    refresh_card(root, repo_id=repo_id, contact_sheet=contact_sheet)


def _remote_files(api, repo_id: str, repo_type: str = REPO_TYPE) -> dict:
    """path -> RepoFile of everything in the repository now."""
    from huggingface_hub.hf_api import RepoFile

    return {item.path: item for item in api.list_repo_tree(repo_id, repo_type=repo_type, recursive=True)
            if isinstance(item, RepoFile)}


def _upload_in_commits(api, root: Path, repo_id: str, files: Sequence[str], cache: _HashCache, files_per_commit: int,
                       result: PushResult, progress: bool, message: str = "Upload dataset files",
                       repo_type: str = REPO_TYPE) -> None:
    """Commit the files the Hub lacks (or holds with other content) in batches; each batch is durable."""
    from huggingface_hub import CommitOperationAdd
    from tqdm.auto import tqdm

    remote = _remote_files(api, repo_id, repo_type)
    todo = []
    for rel in files:
        if _same_as_remote(cache, rel, remote.get(rel)):
            result.unchanged.append(rel)
        else:
            todo.append(rel)
    batches: list[list[str]] = []
    size = 0
    for rel in todo:
        nbytes = (root / rel).stat().st_size
        if not batches or len(batches[-1]) >= files_per_commit or (size + nbytes > DEFAULT_COMMIT_BYTES and batches[-1]):
            batches.append([])
            size = 0
        batches[-1].append(rel)
        size += nbytes
    bar = tqdm(total=sum((root / r).stat().st_size for r in todo), unit="B", unit_scale=True,
               desc=f"push {repo_id}", disable=not progress or not todo)
    with bar:
        for number, batch in enumerate(batches, start=1):
            title = message if len(batches) == 1 else f"{message} (part {number} of {len(batches)})"
            operations = [CommitOperationAdd(path_in_repo=rel, path_or_fileobj=str(root / rel)) for rel in batch]
            api.create_commit(repo_id, operations=operations, commit_message=title, repo_type=repo_type)
            result.commits += 1
            result.uploaded.extend(batch)
            bar.update(sum((root / r).stat().st_size for r in batch))


class _DropMessages(logging.Filter):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def _upload_large_folder(api, root: Path, repo_id: str, files: Sequence[str], private: bool, result: PushResult,
                         repo_type: str = REPO_TYPE) -> None:
    """huggingface_hub 1.x: the resumable multi-threaded uploader (state in ``DIR/.cache/huggingface``)."""
    before = {c.commit_id for c in api.list_repo_commits(repo_id, repo_type=repo_type)}
    hub_logger = logging.getLogger("huggingface_hub")
    quiet = _DropMessages("No files have been modified since last commit")  # a rerun with nothing new is normal
    hub_logger.addFilter(quiet)
    logging.getLogger("huggingface_hub.hf_api").addFilter(quiet)
    try:
        with warnings.catch_warnings():
            # huggingface_hub 1.3x deprecates it in favour of upload_folder, whose resumable path needs hf_xet;
            # we chose it knowingly (see the module docstring), so the banner would only confuse.
            warnings.filterwarnings("ignore", message=r"(?s).*upload_large_folder", category=FutureWarning)
            api.upload_large_folder(
                repo_id=repo_id, folder_path=str(root), repo_type=repo_type, private=private,
                allow_patterns=[glob.escape(f) for f in files],
                ignore_patterns=[CARD_NAME, ".*", "**/.*", "*.tmp"],
                print_report=False,
            )
    finally:
        hub_logger.removeFilter(quiet)
        logging.getLogger("huggingface_hub.hf_api").removeFilter(quiet)
    after = api.list_repo_commits(repo_id, repo_type=repo_type)
    result.commits += sum(1 for c in after if c.commit_id not in before)
    result.uploaded.extend(files if result.commits else [])
    if not result.commits:
        result.unchanged.extend(files)


# -------------------------------------------------------------------------------------------- pull


def pull_dataset(repo_id: str, out: str | Path, revision: str | None = None, endpoint: str | None = None,
                 progress_hook: Callable[[str], None] | None = None) -> Path:
    """Download the dataset repository ``repo_id`` into ``out``; a rerun continues an interrupted download.

    ``out`` must be new, empty, or an earlier pull (huggingface_hub's ``.cache/huggingface`` is there).
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError

    repo_id = parse_repo_id(repo_id, option="the repository id")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; choose a folder path.")
    if out.is_dir() and any(out.iterdir()) and not (out / ".cache" / "huggingface").is_dir():
        raise ConfigError(f"--out {out} is not empty and is not an earlier pull; choose a new or empty folder "
                          "so nothing in it is overwritten.")
    endpoint = _endpoint(endpoint)
    try:
        path = snapshot_download(repo_id, repo_type=REPO_TYPE, revision=revision, local_dir=str(out), endpoint=endpoint)
    except (HfHubHTTPError, OSError, ValueError) as err:
        raise _explain(err, repo_id, endpoint, "downloading") from None
    except Exception as err:
        if type(err).__module__.split(".")[0] in ("httpx", "httpx2", "httpcore", "httpcore2"):
            raise _explain(err, repo_id, endpoint, "downloading") from None
        raise
    return Path(path)
