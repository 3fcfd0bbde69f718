"""The one prompt format pricer trains, tests and serves with.

Kept in one place so that training, evaluation and the Space can never drift apart: the
course's "The Price is Right" format, a question, the product text, and "Price is $" with the
whole-dollar price as the completion. With neighbours (`data.neighbors`), a block of similar
training items and their prices sits between the question and the product text.
"""

from __future__ import annotations

import statistics
from typing import Literal

QUESTION = "How much does this cost to the nearest dollar?"
PREFIX = "Price is $"


NEIGHBORS_HEADER = "Similar items and their prices:"
SUMMARY_HEADER = "Similar items' prices:"
# How a prompt shows its neighbours: a line each (title and price), one line of their prices'
# median, lowest and highest, or both.
NeighborFormat = Literal["lines", "summary", "both"]
NEIGHBOR_FORMATS = ("lines", "summary", "both")


def price_summary(prices: list[float]) -> str:
    """The neighbours' prices as numbers: their median, lowest and highest, in whole dollars."""
    return (
        f"{SUMMARY_HEADER} median ${round(statistics.median(prices))}, lowest ${round(min(prices))}, "
        f"highest ${round(max(prices))}"
    )


def neighbor_block(neighbors: list[tuple[str, float]], format: NeighborFormat = "lines") -> str:
    """The similar items as the prompt shows them ("" for none): a line each, a title and its
    whole-dollar price, and/or the summary of their prices (`format`)."""
    if not neighbors:
        return ""
    if format not in NEIGHBOR_FORMATS:
        raise ValueError(f"a neighbour format is one of {', '.join(NEIGHBOR_FORMATS)}, not {format!r}")
    parts = []
    if format in ("lines", "both"):
        parts += [
            NEIGHBORS_HEADER,
            *(f"- {' '.join(title.split())}: ${round(price)}" for title, price in neighbors),
        ]
    if format in ("summary", "both"):
        parts.append(price_summary([price for _, price in neighbors]))
    return "\n".join(parts)


def make_prompt(text: str, neighbors: str = "") -> str:
    """The prompt for a product text, ending right where the price begins; `neighbors`, a
    `neighbor_block`, goes between the question and the text."""
    middle = f"{neighbors}\n\n{text}" if neighbors else text
    return f"{QUESTION}\n\n{middle}\n\n{PREFIX}"


def with_neighbors(prompt: str, neighbors: str) -> str:
    """A curated prompt with a `neighbor_block` put after its question ("" leaves it as it is)."""
    if not neighbors:
        return prompt
    if prompt.startswith(QUESTION):
        return f"{QUESTION}\n\n{neighbors}\n\n{prompt.removeprefix(QUESTION).lstrip()}"
    return f"{neighbors}\n\n{prompt}"


def without_neighbors(body: str) -> str:
    """A prompt's body (after the question) less its neighbour block, when it has one."""
    body = body.strip()
    if body.startswith((NEIGHBORS_HEADER, SUMMARY_HEADER)):
        return body.split("\n\n", 1)[1] if "\n\n" in body else ""
    return body


def make_completion(price: float) -> str:
    """The completion the model learns: the price rounded to whole dollars, as "123.00"."""
    return f"{round(price)}.00"


def title_from_prompt(prompt: str) -> str:
    """The product title in a prompt: the first line of the text after the question.

    Curated datasets in the course's formats have no title column; their text starts with the
    title line, after the question where there is one.
    """
    body = without_neighbors(prompt.strip().removeprefix(QUESTION))
    for line in body.splitlines():
        line = line.strip()
        if line and line != QUESTION and not line.startswith(PREFIX):
            return line
    return ""


def text_from_prompt(prompt: str) -> str:
    """The product text inside a prompt: what lies between the question (and the neighbour
    block) and "Price is $"."""
    return without_neighbors(prompt.split(PREFIX)[0].removeprefix(QUESTION))


def cut_to_tokens(texts: list[str], tokenizer, max_tokens: int) -> list[tuple[str, int]]:
    """Each text cut to its first `max_tokens` tokens, as the text they decode to, with the
    text's whole token count: the one token cut of curation, predict and the Space.

    It calls the Rust tokenizer on the whole batch (transformers' wrappers convert every id list
    to Python objects and back, which cost curation as much as the tokenizing), then does what
    `tokenizer.decode` does after the backend.
    """
    backend = tokenizer.backend_tokenizer
    encoded = [e.ids for e in backend.encode_batch(list(texts), add_special_tokens=False)]
    decoded = backend.decode_batch([ids[:max_tokens] for ids in encoded], skip_special_tokens=False)
    if tokenizer.clean_up_tokenization_spaces:
        decoded = [tokenizer.clean_up_tokenization(text) for text in decoded]
    return [(text, len(ids)) for text, ids in zip(decoded, encoded, strict=True)]
