"""Every call to the Hugging Face Hub lives here, at the edge of the data flow."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO


class HubOfflineError(ConnectionError):
    """The Hub is needed but HF_HUB_OFFLINE is set."""


def _fs():
    from huggingface_hub import HfFileSystem, constants

    if constants.HF_HUB_OFFLINE:
        # HfFileSystem answers "does not exist" when offline; say what is really wrong.
        raise HubOfflineError("HF_HUB_OFFLINE is set")
    return HfFileSystem()


def _api():
    from huggingface_hub import HfApi, constants

    if constants.HF_HUB_OFFLINE:
        raise HubOfflineError("HF_HUB_OFFLINE is set")
    return HfApi()


def dataset_commit(repo_id: str, revision: str) -> str:
    """The commit that a dataset revision (a branch, a tag or a commit) names on the Hub now."""
    return str(_api().dataset_info(repo_id, revision=revision).sha)


def hub_path(url: str) -> str:
    """`hf://datasets/owner/name/file` as HfFileSystem spells it: `datasets/owner/name/file`."""
    return url.removeprefix("hf://")


def hub_exists(url: str) -> bool:
    return _fs().exists(hub_path(url))


def hub_file_version(url: str) -> str:
    """What identifies a Hub file's content: its LFS sha256 or git blob id (size as a last resort)."""
    info = _fs().info(hub_path(url))
    lfs = info.get("lfs") or {}
    return str(lfs.get("sha256") or info.get("blob_id") or f"size:{info.get('size')}")


def hub_open(url: str) -> BinaryIO:
    """A file on the Hub, streamed: a raw category file is read line by line, never whole."""
    return _fs().open(hub_path(url), "rb")


def load_hub_dataset(repo_id: str, revision: str | None = None):
    """A curated dataset repo from the Hub, as a DatasetDict of its own splits."""
    from datasets import load_dataset

    return load_dataset(repo_id, revision=revision)


def explain_load_error(name: str, error: Exception, what: str = "base model") -> Exception | None:
    """A message a user can act on when the Hub refuses or cannot serve a base model."""
    from huggingface_hub import constants
    from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError

    chain = [error]
    while chain[-1].__cause__ is not None or chain[-1].__context__ is not None:
        chain.append(chain[-1].__cause__ or chain[-1].__context__)
    if any(isinstance(e, GatedRepoError) for e in chain):
        return PermissionError(
            f"{what} {name} is gated on the Hugging Face Hub: accept its licence at "
            f"https://huggingface.co/{name} and log in (`hf auth login`) or set HF_TOKEN"
        )
    if any(isinstance(e, RepositoryNotFoundError) for e in chain):
        return FileNotFoundError(
            f"{what} {name}: no such model on the Hub, nor a local folder or .gguf file by that name "
            "(a private model needs `hf auth login` or HF_TOKEN)"
        )
    if constants.HF_HUB_OFFLINE and any(isinstance(e, (LocalEntryNotFoundError, OSError)) for e in chain):
        return FileNotFoundError(
            f"{what} {name} is not in the local cache and HF_HUB_OFFLINE is set: download it "
            f"once online, or name a local folder{' or .gguf file' if what == 'base model' else ''}"
        )
    return None


def adapter_folder(adapter: str) -> Path:
    """A local adapter folder as it is; a Hub id downloaded once into the Hugging Face cache."""
    if not str(adapter).strip():
        raise FileNotFoundError("adapter: empty; name an adapter folder or a Hub id (owner/name)")
    path = Path(adapter).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise FileNotFoundError(
            f"adapter {adapter}: a file; an adapter is the folder fit saved (<run>/adapter)"
        )
    if adapter.startswith(("/", ".", "~")) or adapter.count("/") != 1:
        raise FileNotFoundError(f"adapter {adapter}: no such folder (nor a Hub id, owner/name)")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(adapter))
    except Exception as error:  # the Hub's errors, or an offline cache miss
        explained = explain_load_error(adapter, error, what="adapter")
        if explained is None:
            raise
        raise explained from error


class HubPublishError(RuntimeError):
    """A push cannot start or did not finish; the message says why and how to retry."""


def check_write_access(repo_ids: list[str], api=None) -> str:
    """Before any work: the token can write, and to the namespaces of these repos. Returns the
    account's name. A token that cannot push is found now, not after hours of training."""
    from huggingface_hub import HfApi

    api = api or HfApi()
    try:
        me = api.whoami()
    except Exception as error:  # no token, a revoked one, offline
        raise HubPublishError(
            f"cannot check the Hugging Face token that would push {', '.join(repo_ids)} "
            f"({type(error).__name__}: {error}); log in (`hf auth login`, or HF_TOKEN), or turn the "
            "pushes off (HubPublisher upload / dataset_upload: false)"
        ) from None
    name = me.get("name")
    role = ((me.get("auth") or {}).get("accessToken") or {}).get("role")
    if role == "read":
        raise HubPublishError(
            f"the Hugging Face token of {name} is read-only: it cannot push {', '.join(repo_ids)}; "
            "use a token with write access"
        )
    namespaces = {name} | {org.get("name") for org in me.get("orgs") or []}
    for repo_id in repo_ids:
        owner = repo_id.split("/")[0]
        if owner not in namespaces:
            raise HubPublishError(
                f"{repo_id}: the token belongs to {name}, which cannot write to {owner!r} (it can write "
                f"to: {', '.join(sorted(n for n in namespaces if n))})"
            )
    return name


def check_repo_id(repo_id: str, option: str) -> None:
    """A malformed repo id stops before any work."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise HubPublishError(f"{option}: {repo_id!r} is not a Hub repo id (owner/name): {error}") from None
    if repo_id.count("/") != 1:
        raise HubPublishError(f"{option}: {repo_id!r} is not a Hub repo id: it needs an owner, as owner/name")


def upload_folder(folder: Path, repo_id: str, repo_type: str, message: str, private: bool, api=None) -> None:
    """The staged folder as one commit; the token comes from the login or HF_TOKEN, never from
    pricer's config, and is never printed."""
    from huggingface_hub import HfApi, get_token

    api = api or HfApi()
    if api.token is None and get_token() is None:
        raise HubPublishError(
            f"no Hugging Face token to push {repo_id}: log in with `hf auth login` or set HF_TOKEN"
        )
    # every flag the push had, so a retry cannot publish private data publicly
    retry = f"hf upload {repo_id} {folder} . --repo-type {repo_type}{' --private' if private else ''} --commit-message {message!r}"
    try:
        create = {"space_sdk": "gradio"} if repo_type == "space" else {}
        api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True, **create)
        api.upload_folder(
            repo_id=repo_id, folder_path=str(folder), repo_type=repo_type, commit_message=message
        )
    except Exception as error:  # network, permissions: the staged folder stays as it is
        raise HubPublishError(
            f"pushing {folder} to {repo_id} failed ({type(error).__name__}: {error}). The staged folder is "
            f"intact; retry with:\n  {retry}"
        ) from error
