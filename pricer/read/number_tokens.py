"""How a tokenizer writes whole-dollar prices: one token a number (Llama 3 up to 999) or one
token a digit (SmolLM2), which decides how `distribution.PriceReader` reads them; and the check
that every price of the curation's range can be read so, made before any curation or load."""

from __future__ import annotations


def _single_token(tokenizer, text: str) -> int | None:
    ids = tokenizer.encode(text, add_special_tokens=False)
    return ids[0] if len(ids) == 1 else None


def _whole_number_ids(tokenizer, digits: int) -> list[int] | None:
    """The token of each whole number with up to `digits` digits, when every one is a single
    token of its own; None otherwise."""
    whole = [_single_token(tokenizer, str(v)) for v in range(10**digits)]
    if all(t is not None for t in whole) and len(set(whole)) == len(whole):
        return whole
    return None


class PriceRangeError(ValueError):
    """A tokenizer that cannot write every price of the range one number a token or one digit a
    token; the message says how it writes them and what range it can read."""


def number_tokens(tokenizer, max_digits: int) -> tuple[str, list[int]]:
    """How a tokenizer writes whole-dollar prices of up to `max_digits` digits: ("whole", the
    token of each number 0..10**max_digits - 1) or ("digits", the token of each digit 0-9).

    The digit search is chosen only when a number of every length up to `max_digits` is written
    one digit a token: a tokenizer with whole-number tokens up to 999 (Llama 3) writes 1234 as
    "123" and "4", which a search one digit a token would misread as $1 and change.
    """
    whole = _whole_number_ids(tokenizer, max_digits)
    if whole is not None:
        return "whole", whole
    digits = [_single_token(tokenizer, str(d)) for d in range(10)]
    if any(t is None for t in digits):
        raise PriceRangeError(
            "the tokenizer writes neither whole numbers nor single digits as one token each"
        )
    one_a_digit = all(
        tokenizer.encode(text, add_special_tokens=False) == [digits[int(c)] for c in text]
        for length in range(2, max_digits + 1)
        for text in ("1" + "0" * (length - 1), "9876543210"[:length], "1234567890"[:length])
    )
    if not one_a_digit:
        example = "1" + "0" * (max_digits - 1)
        pieces = tokenizer.convert_ids_to_tokens(tokenizer.encode(example, add_special_tokens=False))
        readable = max((d for d in range(1, max_digits) if _whole_number_ids(tokenizer, d)), default=0)
        within = (
            f"; it reads whole-dollar prices up to ${10**readable - 1:,}, each one token (a price below "
            f"{10**readable - 0.5})"
            if readable
            else ""
        )
        raise PriceRangeError(
            f"prices of {max_digits} digits cannot be read: the tokenizer writes {example!r} as {pieces}, "
            f"neither one token nor one digit a token{within}"
        )
    return "digits", digits


def check_price_range(tokenizer, max_price: float) -> None:
    """Every whole-dollar price up to `data.rules.max_price` is one the tokenizer's numbers can be
    read as, or an OptionError naming the option, before any curation or load."""
    from pricer.options import OptionError
    from pricer.read.recipe import max_digits

    try:
        number_tokens(tokenizer, max_digits(max_price))
    except PriceRangeError as error:
        raise OptionError(f"data.rules.max_price {max_price}: {error}") from None
