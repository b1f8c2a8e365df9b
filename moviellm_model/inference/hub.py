"""Fetch a model or a benchmark from the Hub into the local cache, with one-sentence errors (no torch)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from moviellm_data.errors import ConfigError

__all__ = ["hub_snapshot"]


def hub_snapshot(repo_id: str, repo_type: str, revision: str | None = None,
                 allow_patterns: Sequence[str] | None = None) -> Path:
    """The snapshot folder of `repo_id` at `revision` in the Hugging Face cache (fetched when missing, resumably;
    `HF_ENDPOINT` and `HF_TOKEN` honoured). Its name is the commit the Hub served."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    what = "dataset" if repo_type == "dataset" else "model"
    endpoint = constants.ENDPOINT
    try:
        return Path(snapshot_download(repo_id, repo_type=repo_type, revision=revision, allow_patterns=allow_patterns))
    except RepositoryNotFoundError:
        raise ConfigError(f"{repo_id} is neither a local folder nor a {what} on {endpoint}; check the name (and "
                          "HF_TOKEN for a private one).") from None
    except RevisionNotFoundError:
        raise ConfigError(f"{what} {repo_id} on {endpoint} has no revision {revision!r}.") from None
    except (HfHubHTTPError, OSError, ValueError) as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise ConfigError(f"cannot download {what} {repo_id} from {endpoint} ({first}); check the network or the "
                          "name, then run the same command again.") from None
