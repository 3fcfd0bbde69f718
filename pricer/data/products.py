"""Products to price: a JSONL of product texts (or a curated dataset) turned into prompts.

A line is a raw-metadata-like record (`title`, and `description`, `features`, `details`), or
`{"text": ...}`, or `{"prompt": ...}` ending in "Price is $". Its text goes through the same
scrubbing and the same token cut as training, and the same prompt. Unlike curation nothing is
dropped: every product gets a price, and a line that cannot be read stops with its line number.
"""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

from pricer.data.prompt import (
    PREFIX,
    QUESTION,
    cut_to_tokens,
    make_prompt,
    title_from_prompt,
    without_neighbors,
)
from pricer.data.raw import SourceError
from pricer.data.rules import CurationRules, product_text

MAX_CHARS = 5_000  # per field: far more than the 160 tokens the model reads
# The same words wherever a product is refused: the Space's page, its API, and `predict`'s lines
NOTHING_TO_PRICE = "Please enter a product title or description to price."
NO_WORDS = "Please describe the product in words: the text has no letters or digits."


class ProductError(ValueError):
    """A product that cannot be priced; the message says which field and why."""


def _kind(value) -> str:
    """A value's type as a message names it, with the value: `int (3)`, `null`."""
    if value is None:
        return "null"
    return f"{type(value).__name__} ({json.dumps(value, ensure_ascii=False, default=str)[:80]})"


def clean_field(name: str, value) -> str:
    """A product field given as text (or nothing), checked: not too long, readable. The text is
    kept as written (stripped), as curation keeps the training items' text."""
    if value is not None and not isinstance(value, str):
        raise ProductError(f"The {name} must be text, not {_kind(value)}.")
    text = (value or "").strip()
    if len(text) > MAX_CHARS:
        raise ProductError(
            f"The {name} is {len(text):,} characters long; please keep it under {MAX_CHARS:,}."
        )
    odd = sorted(
        {c for c in text if unicodedata.category(c) in ("Cc", "Cs", "Co", "Cn") and c not in "\n\t\r"}
    )
    if odd:
        shown = ", ".join(f"U+{ord(c):04X}" for c in odd[:3])
        raise ProductError(
            f"The {name} contains characters that cannot be read ({shown}); please remove them."
        )
    return text


def _texts(name: str, value, split_lines: bool) -> list[str]:
    """A description or features: text (one paragraph; for features one a line) or a list of
    texts as raw metadata has it, each checked and kept as written."""
    if value is None:
        return []
    if isinstance(value, str):
        text = clean_field(name, value)
        if split_lines:
            return [line.strip() for line in text.splitlines() if line.strip()]
        return [text] if text else []
    if not isinstance(value, list):
        raise ProductError(f"The {name} must be text or a list of texts, not {_kind(value)}.")
    for part in value:
        if not isinstance(part, str):
            raise ProductError(
                f"The {name} must be text or a list of texts, not a list holding {_kind(part)}."
            )
        clean_field(name, part)
    if sum(len(part) for part in value) > MAX_CHARS:
        raise ProductError(f"The {name} is over {MAX_CHARS:,} characters long; please shorten it.")
    return list(value)


def _details(value) -> dict | str:
    """Details: an object, its JSON text (as the dataset's loading script wrote it, kept as
    that text), or "key: value" lines, one a line."""
    if value is None:
        return {}
    if isinstance(value, dict):
        clean_field("details", json.dumps(value, ensure_ascii=False, default=str))
        return value
    if not isinstance(value, str):
        raise ProductError(
            f'The details must be an object, its JSON text or "key: value" lines, not {_kind(value)}.'
        )
    text = clean_field("details", value)
    if text.startswith("{"):
        try:
            if isinstance(json.loads(text), dict):
                return value
        except json.JSONDecodeError:
            pass
    pairs = [line.split(":", 1) for line in text.splitlines() if line.strip()]
    return {k.strip(): (v[0].strip() if v else "") for k, *v in pairs}


def check_product(title: str, description: str, *other: str) -> None:
    """What every product needs to be priced: a title or a description, and some words."""
    if not title and not description:
        raise ProductError(NOTHING_TO_PRICE)
    if not any(c.isalnum() for c in " ".join((title, description, *other))):
        raise ProductError(NO_WORDS)


def product_record(title, description=None, features=None, details=None) -> dict:
    """A raw-metadata-like record from a product's fields, each read by its type, the one way
    predict's JSONL, `Pricer.quote`, the Space's page and its API turn them into text:

    - title: text;
    - description: text (one paragraph) or a list of texts;
    - features: text (one feature a line) or a list of texts;
    - details: an object, its JSON text, or "key: value" lines.

    Anything else is a ProductError naming the field and the type it got.
    """
    fields = {
        "title": clean_field("title", title),
        "description": _texts("description", description, split_lines=False),
        "features": _texts("features", features, split_lines=True),
        "details": _details(details),
    }
    details_text = fields["details"] if isinstance(fields["details"], str) else json.dumps(fields["details"])
    check_product(
        fields["title"],
        " ".join(fields["description"]).strip(),
        " ".join(fields["features"]),
        details_text if fields["details"] else "",
    )
    return fields


def product_prompt(record: dict, rules: CurationRules, tokenizer) -> tuple[str, str]:
    """(title, prompt) for one product, built as training built its prompts."""
    for name in ("prompt", "text"):
        if name in record and not isinstance(record[name], str):
            raise ProductError(f'The "{name}" field must be text, not {_kind(record[name])}.')
    if "prompt" in record:
        prompt = record["prompt"]
        if not prompt.rstrip().endswith(PREFIX.strip()):
            raise ValueError(f"the prompt does not end in {PREFIX!r}")
        # the product text inside the prompt gets the same token cut as training's; a neighbour
        # block it holds is left out: an adapter's prompts show the items its own index retrieves
        body = without_neighbors(prompt.rstrip().removesuffix(PREFIX.strip()).strip().removeprefix(QUESTION))
        ((body, _),) = cut_to_tokens([body], tokenizer, rules.max_tokens)
        return str(record.get("title") or title_from_prompt(prompt)), make_prompt(body)
    if "text" not in record:
        record = product_record(
            record.get("title"), record.get("description"), record.get("features"), record.get("details")
        )
    title = str(record.get("title") or "").strip()
    text = record["text"] if "text" in record else product_text(record, rules)
    if not text.strip():
        raise ValueError("no title, text or description to price")
    ((text, _),) = cut_to_tokens([text], tokenizer, rules.max_tokens)
    return title or text.splitlines()[0], make_prompt(text)


def load_products(path: str, rules: CurationRules, tokenizer) -> list[dict]:
    """[{title, prompt}] for every product of a JSONL file, in order."""
    products = []
    file = Path(path).expanduser()
    if not file.is_file():
        raise SourceError(f"data.predict_source: {file} does not exist")
    for number, raw_line in enumerate(file.read_bytes().splitlines(), start=1):
        try:
            line = raw_line.decode("utf-8-sig" if number == 1 else "utf-8")  # a Windows editor's BOM
        except UnicodeDecodeError as error:
            raise SourceError(
                f"{file}:{number}: not UTF-8 text ({error.reason} at byte {error.start})"
            ) from None
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
            title, prompt = product_prompt(record, rules, tokenizer)
        except (json.JSONDecodeError, ValueError) as error:
            raise SourceError(f"{file}:{number}: {error}") from error
        products.append({"title": title, "prompt": prompt})
    if not products:
        raise SourceError(f"data.predict_source: {file} holds no products")
    return products
