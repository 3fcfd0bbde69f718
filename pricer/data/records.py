"""Turning a chunk of raw JSONL lines into curated rows; runs in worker processes.

Import-light on purpose (no torch, no Lightning): curation workers start fast, and a chunk is
tokenized as one batch with the fast tokenizer.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import lru_cache

from pricer.data.prompt import cut_to_tokens, make_completion, make_prompt
from pricer.data.rules import (
    MISSING_FIELDS,
    OUT_OF_RANGE,
    REQUIRED_FIELDS,
    TOO_FEW_TOKENS,
    CurationRules,
    candidate_text,
    normalise_title,
    parse_price,
)

BAD_JSON = "bad_json"


@dataclass
class ChunkResult:
    """What a chunk gave: kept rows and (reason, where) for every dropped line."""

    rows: list[dict] = field(default_factory=list)
    drops: list[tuple[str, str]] = field(default_factory=list)


@lru_cache(maxsize=4)
def _tokenizer(source: str):
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(source)


def product_key(record: dict) -> str:
    """One product's identity: its parent_asin, or its normalised title where that is missing."""
    asin = record.get("parent_asin")
    if isinstance(asin, str) and asin.strip():
        return asin.strip()
    return "title:" + normalise_title(str(record.get("title") or ""))


def curate_chunk(
    path: str,
    category: str,
    lines: list[tuple[int, bytes]],
    rules: CurationRules,
    tokenizer_source: str,
    count_tokens: bool = True,
) -> ChunkResult:
    """Apply the rules to a chunk of lines of one category file.

    With `count_tokens`, each kept row also gets `tokens`: its prompt and completion together in
    the tokenizer's tokens (no special tokens), as the course's `Item.token_count` counts them,
    from one more batched call while the chunk's tokenizer is at hand.
    """
    result = ChunkResult()
    pending: list[tuple[dict, float, str, str]] = []
    for number, line in lines:
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            result.drops.append((BAD_JSON, f"{where}: {error}"))
            continue
        if not isinstance(record, dict):
            result.drops.append((BAD_JSON, f"{where}: not a JSON object"))
            continue
        missing = [k for k in REQUIRED_FIELDS if k not in record]
        title = record.get("title")
        if not missing and not (isinstance(title, str) and title.strip()):
            missing = ["title (empty)"]
        if missing:
            result.drops.append((MISSING_FIELDS, f"{where}: no {', '.join(missing)}"))
            continue
        price, reason = parse_price(record["price"])
        if reason is not None:
            result.drops.append((reason, f"{where}: price {record['price']!r}"))
            continue
        if not rules.min_price <= price <= rules.max_price:
            result.drops.append((OUT_OF_RANGE, f"{where}: price {price}"))
            continue
        text, reason = candidate_text(record, rules)
        if reason is not None:
            result.drops.append((reason, where))
            continue
        pending.append((record, price, text, where))
    if not pending:
        return result
    tokenizer = _tokenizer(tokenizer_source)
    cut = cut_to_tokens([text for _, _, text, _ in pending], tokenizer, rules.max_tokens)
    long_enough = []
    for item, (text, count) in zip(pending, cut, strict=True):
        if count <= rules.min_tokens:
            result.drops.append((TOO_FEW_TOKENS, f"{item[3]}: {count} tokens"))
        else:
            long_enough.append((item, text))
    for (record, price, _, _), text in long_enough:
        result.rows.append(
            {
                "key": product_key(record),
                "title": record["title"].strip(),
                "category": category,
                "price": price,
                "text": text,
                "prompt": make_prompt(text),
                "completion": make_completion(price),
            }
        )
    if count_tokens and result.rows:
        # The whole sequence, not a sum of its parts: tokens merge where the parts join.
        sequences = [row["prompt"] + row["completion"] for row in result.rows]
        encoded = tokenizer.backend_tokenizer.encode_batch(sequences, add_special_tokens=False)
        for row, encoding in zip(result.rows, encoded, strict=True):
            row["tokens"] = len(encoding.ids)
    return result
