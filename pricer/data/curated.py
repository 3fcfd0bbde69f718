"""Already curated datasets: pricer's own, or the course's published formats.

A curated source is used as it is: its own splits, whole, its own prompts. Three layouts are
recognised by their columns:
- pricer's: `title`, `category`, `price`, `text`, `prompt`, `completion`;
- `text` + `price` (as ed-donner/lite-data; the test text ends in "Price is $");
- `prompt` + `completion` (as ed-donner/items_prompts_lite).
"""

from __future__ import annotations

from pathlib import Path

from pricer import hub_calls as hub
from pricer.data.prompt import PREFIX, make_completion, make_prompt, text_from_prompt, title_from_prompt
from pricer.data.raw import SourceError
from pricer.data.rules import normalise_title, parse_price

COLUMNS = ("key", "title", "category", "price", "text", "prompt", "completion")
_SPLIT_NAMES = {"valid": "validation", "val": "validation", "dev": "validation"}


def load_curated(source, revision: str | None = None):
    """A curated source (a parsed DataSource, or its string) as a DatasetDict in pricer's
    columns, at `revision` when it is on the Hub; stops on what it cannot read."""
    from datasets import DatasetDict, load_dataset

    from pricer.data.source import parse_source

    parsed = parse_source(source) if isinstance(source, str) else source
    if parsed.is_raw:
        raise SourceError(f"data.source {parsed.given!r} is raw metadata, not a curated dataset")
    path = Path(parsed.location)
    if parsed.kind == "curated_hub":
        try:
            loaded = hub.load_hub_dataset(parsed.location, revision)
        except Exception as error:  # offline, no such repo, no access
            raise SourceError(
                f"data.source {parsed.given!r}: there is no local folder or file by that name, and the "
                f"Hub dataset {parsed.location} cannot be read ({type(error).__name__}: {error})"
            ) from error
    elif path.is_dir():
        loaded = load_dataset(str(path))
    else:
        kind = {".jsonl": "json"}.get(path.suffix, path.suffix[1:])
        loaded = load_dataset(kind, data_files={"test": str(path)})
    source = parsed.given
    return DatasetDict(
        {_SPLIT_NAMES.get(name, name): _normalise(split, source, name) for name, split in loaded.items()}
    )


def _normalise(split, source: str, name: str):
    columns = set(split.column_names)
    where = f"{source} (split {name})"

    def price_of(value, index):
        price, reason = parse_price(value)
        if reason is not None:
            raise SourceError(f"{where}, row {index}: {reason.replace('_', ' ')}: {value!r}")
        return price

    if {"prompt", "completion", "price", "title"} <= columns:
        convert = None
    elif {"text", "price"} <= columns:

        def convert(row, index):
            price = price_of(row["price"], index)
            text = row["text"]
            prompt = text[: text.index(PREFIX) + len(PREFIX)] if PREFIX in text else make_prompt(text)
            return {"prompt": prompt, "completion": make_completion(price), "price": price}

    elif {"prompt", "completion"} <= columns:

        def convert(row, index):
            completion = str(row["completion"]).strip()
            price = price_of(completion, index)
            prompt = row["prompt"]
            if not prompt.rstrip().endswith(PREFIX.strip()):
                raise SourceError(f"{where}, row {index}: the prompt does not end in {PREFIX!r}")
            return {"prompt": prompt, "completion": completion, "price": price}

    else:
        raise SourceError(
            f"{where}: unknown columns {sorted(columns)}; expected pricer's "
            "(title, price, prompt, completion), text + price, or prompt + completion"
        )
    if convert is not None:
        split = split.map(convert, with_indices=True)
    else:
        for index, value in enumerate(split["price"]):
            price_of(value, index)

    def complete(row):
        title = row.get("title") or title_from_prompt(row["prompt"])
        return {
            "title": title,
            "category": row.get("category") or "",
            "text": row.get("text")
            if "prompt" in columns and row.get("text")
            else text_from_prompt(row["prompt"]),
            "key": row.get("key") or "title:" + normalise_title(title),
            "price": float(row["price"]),
        }

    split = split.map(complete)
    return split.select_columns(list(COLUMNS))
