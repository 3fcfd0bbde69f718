"""Reading the raw Amazon Reviews 2023 metadata, line by line, from the Hub or a local copy.

`datasets` 4 and later no longer run the dataset's loading script, and `load_dataset("json")`
aborts a whole file on one bad line, so the JSONL is read here one line at a time: a bad line
is dropped and counted with its file and line number, and the rest of the file still counts.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from pricer import hub_calls as hub

RAW_REPO = "McAuley-Lab/Amazon-Reviews-2023"
RAW_URL = f"hf://datasets/{RAW_REPO}"

# Keys every 2023 metadata record has and the 2018 release does not: how a file is recognised.
SCHEMA_MARKERS = ("main_category", "features", "parent_asin")
# How many records of a file are looked at to recognise its schema.
SCHEMA_PROBE = 100


class SourceError(ValueError):
    """The data source cannot be used as asked; the message says which file and why."""


def check_files(source, categories: list[str], commit: str | None = None) -> list[str]:
    """The files of the categories asked for in a raw source (a parsed DataSource), at `commit`
    on the Hub; stops naming every missing one."""
    files = [source.category_file(c, commit) for c in categories]
    if source.on_hub:
        try:
            missing = [f for f in files if not hub.hub_exists(f)]
        except Exception as error:  # offline, no network, or the Hub refused
            raise SourceError(
                f"cannot reach the Hub to read {files[0]}: {type(error).__name__}: {error}. "
                "Without the Hub, point data.source at a local folder with the same layout "
                "(raw/meta_categories/meta_<Category>.jsonl)"
            ) from error
    else:
        missing = [f for f in files if not Path(f).is_file()]
    if missing:
        listing = ""
        if not source.on_hub:
            folder = Path(source.category_file("X")).parent
            present = sorted(p.stem.removeprefix("meta_") for p in folder.glob("meta_*.jsonl"))
            listing = f" (the folder has: {', '.join(present) or 'no category files'})"
        raise SourceError(f"missing category file(s): {', '.join(missing)}{listing}")
    return files


def read_lines(path: str) -> Iterator[tuple[int, bytes]]:
    """(line number, raw bytes) for every non-blank line, streamed from disk or the Hub."""
    handle = hub.hub_open(path) if path.startswith("hf://") else open(path, "rb")  # noqa: SIM115
    with handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                yield number, line


def check_schema(path: str, lines: list[tuple[int, bytes]]) -> None:
    """Stop when a file's first records are not 2023 metadata at all (the 2018 release, say).

    Individual malformed records are dropped and counted later; this catches the wrong file,
    which would otherwise be dropped record by record into an empty dataset.
    """
    seen_keys: set[str] = set()
    parsed = 0
    for _, line in lines[:SCHEMA_PROBE]:
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if not isinstance(record, dict):
            continue
        parsed += 1
        if all(key in record for key in SCHEMA_MARKERS):
            return
        seen_keys.update(record)
    if parsed == 0:
        return  # all bad lines: each is dropped and counted with its line number
    hint = ""
    if {"asin", "main_cat"} & seen_keys:
        hint = " It looks like the 2018 release (asin, main_cat, feature), which has another schema."
    raise SourceError(
        f"{path} is not Amazon Reviews 2023 metadata: none of its first {parsed} records has the "
        f"fields {', '.join(SCHEMA_MARKERS)}; they have {', '.join(sorted(seen_keys)[:12])}.{hint}"
    )
