"""Products to price: a JSONL of product texts (or a curated dataset) turned into prompts.

A line is a raw-metadata-like record (`title`, and `description`, `features`, `details`), or
`{"text": ...}`, or `{"prompt": ...}` ending in "Price is $". Its text goes through the same
scrubbing and the same token cut as training, and the same prompt. Unlike curation nothing is
dropped: every product gets a price, and a line that cannot be read stops with its line number.
"""

from __future__ import annotations

import json
from pathlib import Path

from pricer.prompt import PREFIX, QUESTION, cut_to_tokens, make_prompt, title_from_prompt
from pricer.raw import SourceError
from pricer.rules import CurationRules, product_text


def product_prompt(record: dict, rules: CurationRules, tokenizer) -> tuple[str, str]:
    """(title, prompt) for one product, built as training built its prompts."""
    for name in ("prompt", "text", "title"):
        if name in record and not isinstance(record[name], str):
            raise ValueError(f'"{name}" must be text, got {json.dumps(record[name])}')
    if "prompt" in record:
        prompt = record["prompt"]
        if not prompt.rstrip().endswith(PREFIX.strip()):
            raise ValueError(f"the prompt does not end in {PREFIX!r}")
        # the product text inside the prompt gets the same token cut as training's
        body = prompt.rstrip().removesuffix(PREFIX.strip()).strip().removeprefix(QUESTION).strip()
        ((body, _),) = cut_to_tokens([body], tokenizer, rules.max_tokens)
        return str(record.get("title") or title_from_prompt(prompt)), make_prompt(body)
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
            line = raw_line.decode("utf-8")
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
