"""Every call to the Hugging Face Hub lives here, at the edge of the data flow."""

from __future__ import annotations

from typing import BinaryIO


class HubOfflineError(ConnectionError):
    """The Hub is needed but HF_HUB_OFFLINE is set."""


def _fs():
    from huggingface_hub import HfFileSystem, constants

    if constants.HF_HUB_OFFLINE:
        # HfFileSystem answers "does not exist" when offline; say what is really wrong.
        raise HubOfflineError("HF_HUB_OFFLINE is set")
    return HfFileSystem()


def hub_path(url: str) -> str:
    """`hf://datasets/owner/name/file` as HfFileSystem spells it: `datasets/owner/name/file`."""
    return url.removeprefix("hf://")


def hub_exists(url: str) -> bool:
    return _fs().exists(hub_path(url))


def hub_open(url: str) -> BinaryIO:
    """A file on the Hub, streamed: a raw category file is read line by line, never whole."""
    return _fs().open(hub_path(url), "rb")


def load_hub_dataset(repo_id: str, revision: str | None = None):
    """A curated dataset repo from the Hub, as a DatasetDict of its own splits."""
    from datasets import load_dataset

    return load_dataset(repo_id, revision=revision)
