"""What `data.source` names, worked out once: the raw Amazon Reviews 2023 metadata or an
already curated dataset, on the Hub or on this machine. Everything downstream asks this value
instead of looking at the string again."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pricer.data.raw import RAW_REPO, RAW_URL, SourceError

Kind = Literal["raw_hub", "raw_local", "curated_hub", "curated_local"]
CURATED_FILES = (".parquet", ".jsonl", ".json", ".csv")
RAW_LAYOUT = Path("raw") / "meta_categories"


@dataclass(frozen=True)
class DataSource:
    """A parsed `data.source`.

    Attributes:
        kind: raw_hub, raw_local, curated_hub or curated_local.
        location: the raw dataset's `hf://` URL, a curated dataset's Hub id, or a local path.
        given: what the option said.
    """

    kind: Kind
    location: str
    given: str

    @property
    def is_raw(self) -> bool:
        return self.kind.startswith("raw")

    @property
    def on_hub(self) -> bool:
        return self.kind.endswith("hub")

    def category_file(self, category: str, commit: str | None = None) -> str:
        """Where a category's metadata lives in a raw source; on the Hub, at `commit` when one
        is given (`hf://datasets/owner/name@commit/...`), so every file comes from one commit."""
        relative = RAW_LAYOUT / f"meta_{category}.jsonl"
        if self.on_hub:
            return f"{self.location}{'@' + commit if commit else ''}/{relative.as_posix()}"
        return str(Path(self.location) / relative)


def _looks_like_a_path(text: str) -> bool:
    return text.startswith(("/", ".", "~")) or Path(text).suffix in CURATED_FILES or text.count("/") != 1


def parse_source(source: str) -> DataSource:
    """The source's kind and location; a path that is not here stops with a message."""
    text = str(source).strip()
    bare = text.rstrip("/")
    if bare in (RAW_URL, RAW_REPO):
        return DataSource("raw_hub", RAW_URL, source)
    if bare.startswith("hf://"):
        repo = bare.removeprefix("hf://").removeprefix("datasets/")
        if repo == RAW_REPO:
            return DataSource("raw_hub", RAW_URL, source)
        if repo.count("/") == 1:
            return DataSource("curated_hub", repo, source)
        raise SourceError(
            f"data.source {source!r}: an hf:// source names a dataset, as hf://datasets/owner/name"
        )
    path = Path(text).expanduser()
    if path.exists():
        if (path / RAW_LAYOUT).is_dir():
            return DataSource("raw_local", str(path), source)
        if path.is_dir() or path.suffix in CURATED_FILES:
            return DataSource("curated_local", str(path), source)
        raise SourceError(
            f"data.source {source!r} is a file pricer cannot read: a curated dataset is a folder or a "
            f"{', '.join(CURATED_FILES)} file"
        )
    if _looks_like_a_path(text):
        raise SourceError(
            f"data.source {source!r}: no such local folder or file (a raw source is a folder holding "
            f"{RAW_LAYOUT}/meta_<Category>.jsonl; a Hub dataset is owner/name)"
        )
    return DataSource("curated_hub", bare, source)
