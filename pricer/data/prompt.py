"""The one prompt format pricer trains, tests and serves with.

Kept in one place so that training, evaluation and the Space can never drift apart: the
course's "The Price is Right" format, a question, the product text, and "Price is $" with the
whole-dollar price as the completion.
"""

from __future__ import annotations

QUESTION = "How much does this cost to the nearest dollar?"
PREFIX = "Price is $"


def make_prompt(text: str) -> str:
    """The prompt for a product text, ending right where the price begins."""
    return f"{QUESTION}\n\n{text}\n\n{PREFIX}"


def make_completion(price: float) -> str:
    """The completion the model learns: the price rounded to whole dollars, as "123.00"."""
    return f"{round(price)}.00"


def title_from_prompt(prompt: str) -> str:
    """The product title in a prompt: the first line of the text after the question.

    Curated datasets in the course's formats have no title column; their text starts with the
    title line, after the question where there is one.
    """
    for line in prompt.splitlines():
        line = line.strip()
        if line and line != QUESTION and not line.startswith(PREFIX):
            return line
    return ""


def text_from_prompt(prompt: str) -> str:
    """The product text inside a prompt: what lies between the question and "Price is $"."""
    return prompt.split(PREFIX)[0].removeprefix(QUESTION).strip()


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
