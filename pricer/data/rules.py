"""The curation rules: which raw records become training items, and the text each one gets.

The defaults are the "LLM Engineering" course's: prices from $0.50 to $999.49, more than 300
characters of text, more than 150 tokens cut to 160, scrubbed of punctuation and part numbers.
Every rule is an option, and every record a rule rejects is counted with a reason.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from typing import Literal

from pricer.options import OptionError

# Drop reasons, as they appear in the accounting.
NO_PRICE = "no_price"
BAD_PRICE = "unparseable_price"
OUT_OF_RANGE = "price_out_of_range"
TOO_SHORT = "too_short"
TOO_FEW_TOKENS = "too_few_tokens"
MISSING_FIELDS = "missing_fields"

# Fields a 2023 metadata record needs for curation.
REQUIRED_FIELDS = ("title", "price", "description", "features", "details")

# ASCII digits only (Python's \d and float() also take Arabic-Indic and other digits); a comma
# only between groups of three ("1,299.99"): "9,99" is a decimal comma, not $999.
_PRICE = re.compile(r"^(?:[0-9]+|[0-9]{1,3}(?:,[0-9]{3})+)(?:\.[0-9]+)?$")
_PUNCTUATION = re.compile(r'[:\[\]"{}【】\s]+')


@dataclass
class CurationRules:
    """The course's curation rules, each one adjustable.

    Args:
        min_price: Lowest price kept, in dollars.
        max_price: Highest price kept; 999.49 keeps every price that rounds to three digits,
            which Llama 3's tokenizer writes as one token.
        min_chars: Items need more characters of description, features and details than this.
        max_chars: Characters of that text kept before scrubbing and tokenizing (the course's
            1,120: 160 tokens at 7 characters a token).
        min_tokens: Items need more tokens than this (of the base model's tokenizer).
        max_tokens: Text is cut to this many tokens, so every prompt has about the same length.
        part_number_length: Words this long or longer that contain a digit are dropped as
            likely part numbers, which say nothing about the price.
        details: How the details object becomes text. course (the default): exactly the course's
            `Item`, the JSON string the dataset's loading script made (`json.dumps`, so an empty
            one is "{}") with the `removals` substrings taken out. clean: pricer's "key value"
            lines without the `dropped_detail_keys`, which reads better but shortens texts, so
            fewer items pass the character and token rules than the course's.
        removals: Substrings the course takes out of the details string.
        dropped_detail_keys: Detail keys that are boilerplate (details: clean only).
    """

    min_price: float = 0.5
    max_price: float = 999.49
    min_chars: int = 300
    max_chars: int = 1120
    min_tokens: int = 150
    max_tokens: int = 160
    part_number_length: int = 7
    details: Literal["course", "clean"] = "course"
    removals: list[str] = field(
        default_factory=lambda: [
            '"Batteries Included?": "No"',
            '"Batteries Included?": "Yes"',
            '"Batteries Required?": "No"',
            '"Batteries Required?": "Yes"',
            "By Manufacturer",
            "Item",
            "Date First",
            "Package",
            ":",
            "Number of",
            "Best Sellers",
            "Number",
            "Product ",
        ]
    )
    dropped_detail_keys: list[str] = field(
        default_factory=lambda: [
            "Batteries Included?",
            "Batteries Required?",
            "Best Sellers Rank",
            "Date First Available",
            "Customer Reviews",
            "Is Discontinued By Manufacturer",
        ]
    )

    def __post_init__(self) -> None:
        if not 0 <= self.min_price <= self.max_price:
            raise OptionError(
                f"data.rules: need 0 <= min_price <= max_price, got {self.min_price} and {self.max_price}"
            )
        if not self.max_tokens > 0 or self.min_tokens >= self.max_tokens:
            raise OptionError(
                f"data.rules: need min_tokens < max_tokens, got {self.min_tokens} and {self.max_tokens}"
            )
        if self.max_chars <= self.min_chars:
            raise OptionError(
                f"data.rules: need min_chars < max_chars, got {self.min_chars} and {self.max_chars}"
            )

    def as_dict(self) -> dict:
        return asdict(self)


def parse_price(value: object) -> tuple[float | None, str | None]:
    """A price from a raw field: a number, "$1,299.99", "None" or null.

    Returns (price, None) or (None, reason); ranges such as "$10 - $20" and other text are
    unparseable, never guessed at.
    """
    if value is None:
        return None, NO_PRICE
    if isinstance(value, bool):
        return None, BAD_PRICE
    if isinstance(value, (int, float)):
        price = float(value)
    elif isinstance(value, str):
        text = value.strip().removeprefix("$").strip()
        if text in ("", "None", "none", "null", "NaN", "nan"):
            return None, NO_PRICE
        if not _PRICE.match(text):
            return None, BAD_PRICE
        price = float(text.replace(",", ""))
    else:
        return None, BAD_PRICE
    if not math.isfinite(price):
        return None, BAD_PRICE
    return price, None


def scrub(text: str, part_number_length: int = 7) -> str:
    """Collapse brackets, quotes, colons and whitespace, and drop likely part numbers."""
    text = _PUNCTUATION.sub(" ", text).strip()
    text = text.replace(" ,", ",").replace(",,,", ",").replace(",,", ",")
    # A word all letters has no digit (no character is both), so most long words skip the
    # per-character check; str.isdigit in C through map where they do not. A list, not a
    # generator: join builds one anyway. Measured on the sample: scrub itself a fifth to a
    # quarter faster.
    return " ".join(
        [
            w
            for w in text.split(" ")
            if len(w) < part_number_length or w.isalpha() or not any(map(str.isdigit, w))
        ]
    )


def _parts(value: object) -> list:
    """A list field's entries as the course joins them; a text is one entry, not its letters."""
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _lines(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value.strip() else []
    if isinstance(value, list):
        return [str(v) for v in value if v is not None and str(v).strip()]
    return [str(value)]


def _details(value: object, dropped: list[str]) -> str:
    """Details as "key value" lines; raw JSONL has an object, the old script a JSON string."""
    if isinstance(value, str):
        if value.strip() in ("", "None", "{}"):
            return ""
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return value
    if not isinstance(value, dict):
        return "" if value is None else str(value)
    lines = []
    for key, item in value.items():
        if key in dropped:
            continue
        if isinstance(item, (dict, list)):
            item = json.dumps(item, ensure_ascii=False)
        lines.append(f"{key} {item}")
    return "\n".join(lines)


def _course_details(value: object, removals: list[str]) -> str:
    """The course's details text: the loading script's JSON string, less the removals."""
    details = value if isinstance(value, str) else json.dumps(value)
    for removal in removals:
        details = details.replace(removal, "")
    return details


def raw_contents(record: dict, rules: CurationRules) -> str:
    """Description, features and details joined, before scrubbing (the course's order).

    With `details: course`, character for character the course's `Item.parse`: the lists
    joined by newlines as they are (empty entries too), each part followed by a newline, the
    details JSON string appended whenever it is not empty (an empty object's "{}" is not). A
    text where a list goes is one entry; no details at all add nothing.
    """
    if rules.details == "course":
        contents = "\n".join(str(x) for x in _parts(record.get("description")))
        if contents:
            contents += "\n"
        features = "\n".join(str(x) for x in _parts(record.get("features")))
        if features:
            contents += features + "\n"
        details = record.get("details")
        details = "" if details is None else details if isinstance(details, str) else json.dumps(details)
        if details:
            contents += _course_details(details, rules.removals) + "\n"
        return contents
    parts = [
        "\n".join(_lines(record.get("description"))),
        "\n".join(_lines(record.get("features"))),
        _details(record.get("details"), rules.dropped_detail_keys),
    ]
    return "".join(p + "\n" for p in parts if p)


def product_text(record: dict, rules: CurationRules, contents: str | None = None) -> str:
    """A product's scrubbed title and text, before the token cut: what curation trains on and
    what predict and the Space price, from the same function."""
    contents = raw_contents(record, rules) if contents is None else contents
    title = scrub(str(record.get("title") or ""), rules.part_number_length)
    return f"{title}\n{scrub(contents[: rules.max_chars], rules.part_number_length)}"


def candidate_text(record: dict, rules: CurationRules) -> tuple[str | None, str | None]:
    """The scrubbed text of a record before the token rules, or (None, reason)."""
    contents = raw_contents(record, rules)
    if len(contents) <= rules.min_chars:
        return None, TOO_SHORT
    return product_text(record, rules, contents), None


def normalise_title(title: str) -> str:
    """A title reduced to lower-case words, to recognise the same product without an id."""
    return " ".join(re.findall(r"\w+", title.lower()))
