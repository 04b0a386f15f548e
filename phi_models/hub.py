"""Fetching files from the Hugging Face Hub, with errors a user can act on.

The one place in philora that talks to the hub; models and datasets both come
through here. Files land in huggingface_hub's standard cache, and
``HF_HUB_OFFLINE`` / ``HF_TOKEN`` are read when a call is made, not at import,
so a test or a user can flip them at any time. Nothing fetched is executed.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from urllib.parse import urlparse

from huggingface_hub import hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)


class HubError(RuntimeError):
    """A file could not be had from the hub; the message says what to do."""


class HubFileMissing(HubError):
    """The repository exists but has no such file."""


# huggingface_hub retries a dead connection for ~25 s per file, so after one failed attempt the
# files asked for in the next UNREACHABLE_FOR seconds (the rest of that load, and the tokenizer /
# model / data loads right after it) come from the cache only. The window expires so that one
# transient failure does not leave a long-lived process cache-only for good.
UNREACHABLE_FOR = 60.0
_clock = time.monotonic  # a module attribute so tests can move time
_hub_unreachable_until = float("-inf")


def hub_recently_unreachable() -> bool:
    """True while a failed attempt to reach the hub is less than ``UNREACHABLE_FOR`` seconds old."""
    return _clock() < _hub_unreachable_until


# Before the first download of a window, one TCP connect (PROBE_TIMEOUT seconds at most) tells whether the
# hub's host can be reached at all; with no network, that fails in a moment where huggingface_hub's own
# retries would take ~25 s and print a dozen lines.
PROBE_TIMEOUT = 3.0
_hub_reachable_until = float("-inf")

# The advice at the end of a "not in the cache and the hub could not be reached" error, by repo type.
OFFLINE_ADVICE = {
    "model": "pass --model a local directory holding the model files (or a model already in the cache), "
    "or download it once with network access",
    "dataset": "pass --data a local .jsonl/.json/.parquet/.csv/.tsv file or a bundled sample "
    "(samples/roleplay, samples/alpaca, ...), or download the dataset once with network access",
}


def hub_endpoint() -> str:
    """The hub's base URL (``HF_ENDPOINT`` when set)."""
    return os.environ.get("HF_ENDPOINT", "").strip() or "https://huggingface.co"


def hub_reachable() -> bool:
    """Whether a TCP connection to the hub's host opens within ``PROBE_TIMEOUT`` (remembered for a while)."""
    global _hub_reachable_until, _hub_unreachable_until
    if _clock() < _hub_reachable_until:
        return True
    url = urlparse(hub_endpoint())
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=PROBE_TIMEOUT):
            pass
    except OSError:
        _hub_unreachable_until = _clock() + UNREACHABLE_FOR
        return False
    _hub_reachable_until = _clock() + UNREACHABLE_FOR
    return True


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` asks for the cache only."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def fetch_file(
    repo_id: str,
    filename: str,
    *,
    repo_type: str = "model",
    revision: str | None = None,
    required: bool = True,
) -> Path | None:
    """Return the local path of ``filename`` from hub repo ``repo_id``.

    Downloads into the standard cache unless ``HF_HUB_OFFLINE`` is set, in which
    case the cached copy must exist. With ``required=False`` a file the repo does
    not have gives ``None`` instead of an error (used for optional files such as
    ``generation_config.json`` or a shard index).
    """
    global _hub_unreachable_until
    where = f"{repo_type} repo '{repo_id}'" + (f" at revision '{revision}'" if revision else "")
    cache_only = hub_offline() or hub_recently_unreachable() or not hub_reachable()
    try:
        path = hf_hub_download(
            repo_id,
            filename,
            repo_type=repo_type,
            revision=revision,
            token=os.environ.get("HF_TOKEN") or None,
            local_files_only=cache_only,
        )
    except GatedRepoError as err:
        raise HubError(
            f"{where} is gated: accept its terms on huggingface.co, then set HF_TOKEN to a token "
            f"of that account (or run `hf auth login`)"
        ) from err
    except RepositoryNotFoundError as err:
        hint = "set HF_TOKEN if it is private" if not os.environ.get("HF_TOKEN") else "check the name"
        raise HubError(f"{where} was not found or is private: {hint}") from err
    except RevisionNotFoundError as err:
        raise HubError(f"{where}: no such revision; pass an existing branch, tag or commit") from err
    except LocalEntryNotFoundError as err:
        if not cache_only:  # a real attempt failed; cache-only misses must not extend the window
            _hub_unreachable_until = _clock() + UNREACHABLE_FOR
        if not required:
            return None
        reason = "HF_HUB_OFFLINE is set" if hub_offline() else "the hub could not be reached"
        advice = OFFLINE_ADVICE.get(repo_type, OFFLINE_ADVICE["model"])
        raise HubError(f"'{filename}' from {where} is not in the local cache and {reason}: {advice}") from err
    except EntryNotFoundError as err:
        if not required:
            return None
        raise HubFileMissing(f"{where} has no file '{filename}'") from err
    except HfHubHTTPError as err:
        raise HubError(f"fetching '{filename}' from {where} failed: {err}") from err
    return Path(path)


def list_repo_files(repo_id: str, *, repo_type: str = "model", revision: str | None = None) -> list[str]:
    """The file paths of a hub repository: listed by the hub, or, offline, those of its cached snapshot."""
    from huggingface_hub import HfApi, snapshot_download

    where = f"{repo_type} repo '{repo_id}'" + (f" at revision '{revision}'" if revision else "")
    token = os.environ.get("HF_TOKEN") or None
    if not (hub_offline() or hub_recently_unreachable() or not hub_reachable()):
        try:
            return list(HfApi().list_repo_files(repo_id, repo_type=repo_type, revision=revision, token=token))
        except GatedRepoError as err:
            raise HubError(f"{where} is gated: accept its terms on huggingface.co, then set HF_TOKEN") from err
        except RepositoryNotFoundError as err:
            raise HubError(f"{where} was not found or is private: check the name, or set HF_TOKEN") from err
        except RevisionNotFoundError as err:
            raise HubError(f"{where}: no such revision; pass an existing branch, tag or commit") from err
        except HfHubHTTPError as err:
            raise HubError(f"listing the files of {where} failed: {str(err).splitlines()[0]}") from err
        except OSError:  # the connection died after the probe: fall back to the cache
            pass
    try:
        folder = Path(snapshot_download(repo_id, repo_type=repo_type, revision=revision, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        reason = "HF_HUB_OFFLINE is set" if hub_offline() else "the hub could not be reached"
        advice = OFFLINE_ADVICE.get(repo_type, OFFLINE_ADVICE["model"])
        raise HubError(f"{where} is not in the local cache and {reason}: {advice}") from None
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
