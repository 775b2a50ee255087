"""Where a model's files are: ``--model-path`` names a local folder or ``.gguf`` file, used
as it is, or a Hugging Face hub id (``org/name``, with an optional ``--revision``) that
``huggingface_hub.snapshot_download`` resolves to a snapshot folder in the hub cache,
downloading it first when the hub is reachable.

Which one a value is: an existing path is local (so a folder ``org/name`` under the working
directory wins over the hub id, as in transformers); a value that looks like a path
(absolute, ``./``, ``../``, ``~``, or ending in ``.gguf``) and does not exist is a missing
local path; anything else that is a valid repo id is a hub id. The hub cache and the network
are huggingface_hub's own environment, read when it is imported: ``HF_HOME`` /
``HF_HUB_CACHE`` (where snapshots live), ``HF_HUB_OFFLINE=1`` (never touch the network: only
the cache), ``HF_TOKEN`` (gated or private repos), ``HF_ENDPOINT`` (a mirror).

Errors: every way of not finding the model is a :class:`ModelNotFoundError` (a
:class:`~model_worker.config.ConfigError`: the operator fixes the path, the id, the cache or
the network; retrying the same load does not help). Other I/O failures (a full disk while
downloading) propagate unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model_worker.config import ConfigError

__all__ = ["HUB_FILES", "ModelFiles", "ModelNotFoundError", "default_name", "hub_id", "resolve"]

#: the files of a hub snapshot the worker loads (weights as safetensors only, never pickles)
HUB_FILES = ("*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "*.jinja")


class ModelNotFoundError(ConfigError, FileNotFoundError):
    """The model path does not exist, or the hub id cannot be resolved to a snapshot."""


@dataclass(frozen=True)
class ModelFiles:
    """A resolved model: the folder to load from, the extra ``from_pretrained`` keyword
    arguments (``gguf_file`` for a ``.gguf`` file) and the hub id it came from, if any."""

    folder: Path
    kwargs: dict[str, Any] = field(default_factory=dict)
    hub_id: str | None = None


def _looks_local(spec: str) -> bool:
    return (
        spec.startswith(("/", "./", "../", "~"))
        or spec in (".", "..", "~")
        or spec.endswith(".gguf")
    )


def hub_id(spec: str | Path) -> str | None:
    """``spec`` when it names a hub repo (a string that is not an existing path, does not
    look like one, and is a valid repo id ``name`` or ``org/name``), else None. A
    :class:`~pathlib.Path` is always a local path."""
    text = str(spec)
    if isinstance(spec, Path) or _looks_local(text) or Path(text).exists():
        return None
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id  # type: ignore[attr-defined]  # lazy

    try:
        validate_repo_id(text)
    except HFValidationError:
        return None
    return text


def default_name(spec: str | Path) -> str:
    """The served model id when none is configured: the hub id itself, else the folder's (or
    file's) name."""
    repo = hub_id(spec)
    return repo if repo is not None else Path(spec).resolve().name


def resolve(
    spec: str | Path,
    revision: str | None = None,
    *,
    cache_dir: str | Path | None = None,
    local_files_only: bool = False,
) -> ModelFiles:
    """The files of the model ``spec`` names (see the module docstring).

    Args:
        spec: a local folder or ``.gguf`` file, or a hub id.
        revision: branch, tag or commit of a hub id (default ``main``); refused for a local
            path.
        cache_dir: the hub cache (default: huggingface_hub's, from ``HF_HUB_CACHE``).
        local_files_only: use the cache only, as ``HF_HUB_OFFLINE=1`` does.

    Raises:
        ModelNotFoundError: the local path does not exist; the hub id is not cached and the
            hub is unreachable or offline; the repo or revision does not exist (or is gated);
            the snapshot has no safetensors weights.
        ConfigError: ``revision`` given with a local path.
    """
    repo = hub_id(spec)
    if repo is None:
        path = Path(spec)
        if not path.exists():
            hint = " (nor a valid hub id)" if not _looks_local(str(spec)) else ""
            raise ModelNotFoundError(f"model path {path} does not exist{hint}")
        if revision is not None:
            raise ConfigError(
                f"--revision {revision} applies to a hub model id, but {path} is a local path"
            )
        if path.is_file() and path.suffix == ".gguf":
            return ModelFiles(path.parent, {"gguf_file": path.name})
        return ModelFiles(path)
    folder = _snapshot(repo, revision, cache_dir, local_files_only)
    if not any(folder.glob("*.safetensors")):
        raise ModelNotFoundError(
            f"hub model {repo!r} has no safetensors weights in {folder} (this worker loads "
            "safetensors only; convert the checkpoint or use a local folder)"
        )
    return ModelFiles(folder, {}, repo)


def _snapshot(
    repo: str, revision: str | None, cache_dir: str | Path | None, local_files_only: bool
) -> Path:
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    rev = revision or "main"
    cache = Path(cache_dir) if cache_dir is not None else Path(constants.HF_HUB_CACHE)
    try:
        folder = snapshot_download(
            repo,
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            allow_patterns=list(HUB_FILES),
        )
    except LocalEntryNotFoundError:
        offline = local_files_only or constants.HF_HUB_OFFLINE
        why = "HF_HUB_OFFLINE is set" if offline else "the hub is unreachable"
        raise ModelNotFoundError(
            f"model {repo!r} (revision {rev}) is not in the Hugging Face hub cache {cache} and "
            f"{why}: download it there first (hf download {repo}), point HF_HUB_CACHE at a "
            "cache that has it, or pass a local folder as --model-path"
        ) from None
    except GatedRepoError:
        raise ModelNotFoundError(
            f"hub model {repo!r} is gated: accept its terms on the hub and set HF_TOKEN"
        ) from None
    except RepositoryNotFoundError:
        raise ModelNotFoundError(
            f"hub model {repo!r} not found (or private: set HF_TOKEN); a local folder must "
            "exist to be used as --model-path"
        ) from None
    except RevisionNotFoundError:
        raise ModelNotFoundError(f"hub model {repo!r} has no revision {rev!r}") from None
    return Path(folder)
