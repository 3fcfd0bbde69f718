"""The training items most like a product, for its prompt (`data.neighbors`).

The index is the training items' unit-length TF-IDF rows (`features.py`, the same features
as the blend's classical model, which saves them in `tfidf.safetensors` beside the adapter)
with their titles, cut to a token budget, and prices (the training items, `train_items.parquet`).
The nearest are by cosine similarity, the most similar first, ties to the earlier training item,
so that training, `test`, `predict` and the Space retrieve the same items for the same text.

A neighbour shares at least one word with the product (a positive cosine): a product that shares
none with any training item (another script, made-up words) gets fewer neighbours, or none,
rather than the first training rows at similarity 0. A product never sees itself or a duplicate
of itself: a training item whose text starts with the
same title, reduced as curation's dedup key reduces a title without an id (`rules.normalise_title`),
is never its neighbour. The rule reads the texts alone, so every read path applies it the same way
(the Space has no product ids), and a training item's own row is left out by it.

Hand-written rather than scikit-learn's `NearestNeighbors`: its partition picks among tied
items arbitrarily, and an item's duplicates have to be left out of its own neighbours.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from pricer.data.features import tfidf_vectorizer
from pricer.data.prompt import cut_to_tokens, neighbor_block
from pricer.data.rules import normalise_title
from pricer.options import OptionError

CHUNK = 1024  # queries a product with the rows, to bound memory: CHUNK x training items floats


def dedup_key(text: str) -> str | None:
    """The key a text's product is known by without an id: its first line (the title, in every
    curated text) reduced as curation reduces titles; None for a text with no words there."""
    first = text.strip().split("\n", 1)[0] if text.strip() else ""
    return normalise_title(first) or None


@dataclass
class Found:
    """The rows retrieved for some texts, and how many training rows were left out as a text's
    own duplicates (its own row included, for a training item): the neighbours' accounting."""

    rows: list[list[int]]
    left_out: int = 0


@dataclass
class Retriever:
    """The k training items nearest a text, as (title, price) pairs.

    Args:
        vectorizer: The fitted TF-IDF vectorizer of the training items' texts.
        rows: The training items' TF-IDF rows (unit length, a scipy sparse matrix).
        titles: The training items' titles as prompts show them, in the rows' order.
        prices: Their prices, in the same order.
        keys: Their texts' dedup keys (`dedup_key`), in the same order.
    """

    vectorizer: object
    rows: object
    titles: list[str]
    prices: list[float]
    keys: list[str | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        counts = (len(self.titles), len(self.prices), len(self.keys))
        if len(set(counts)) != 1 or counts[0] != self.rows.shape[0]:
            raise OptionError(
                f"{len(self.titles)} titles, {len(self.prices)} prices and {len(self.keys)} texts for "
                f"{self.rows.shape[0]} TF-IDF rows: the training items do not match their features"
            )
        self._columns = self.rows.T.tocsc()  # once: every query multiplies by it (a Space's each quote)
        self._rows_of: dict[str, list[int]] = defaultdict(list)
        for row, key in enumerate(self.keys):
            if key is not None:
                self._rows_of[key].append(row)

    @classmethod
    def fit(cls, texts: list[str], titles: list[str], prices, tokenizer, title_tokens: int) -> Retriever:
        """The index of these training items, their titles cut to `title_tokens` tokens."""
        vectorizer = tfidf_vectorizer()
        rows = vectorizer.fit_transform(list(texts)).tocsr()
        return cls.of(vectorizer, rows, texts, titles, prices, tokenizer, title_tokens)

    @classmethod
    def of(
        cls, vectorizer, rows, texts: list[str], titles: list[str], prices, tokenizer, title_tokens: int
    ) -> Retriever:
        """The index of fitted features (a saved TF-IDF model's) of these training texts, titles
        cut as `fit` cuts them."""
        cut = [
            text for text, _ in cut_to_tokens([" ".join(t.split()) for t in titles], tokenizer, title_tokens)
        ]
        return cls(vectorizer, rows, cut, [float(p) for p in prices], [dedup_key(t) for t in texts])

    def find(self, texts: list[str], k: int, min_similarity: float = 0.0) -> Found:
        """The rows of the `k` training items most similar to each text, most similar first,
        never one with the text's own dedup key, nor one whose cosine similarity to it is not
        above `min_similarity` (0: one that shares no word with it)."""
        if k <= 0:
            return Found([[] for _ in texts])
        queries = self.vectorizer.transform(list(texts)).tocsr()
        own = [self._rows_of.get(key, []) if key else [] for key in map(dedup_key, texts)]
        found = Found([], sum(map(len, own)))
        for start in range(0, len(texts), CHUNK):
            similarity = np.asarray(
                (queries[start : start + CHUNK] @ self._columns).todense(), dtype=np.float64
            )
            for offset, rows in enumerate(own[start : start + CHUNK]):
                similarity[offset, rows] = -np.inf
            # the most similar first, ties to the earlier row: a stable sort of -similarity; only
            # items above the minimum (at 0, those that share a word) are its neighbours
            order = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
            for offset, ranked in enumerate(order):
                found.rows.append([int(r) for r in ranked if similarity[offset, r] > min_similarity])
        return found

    def nearest(self, texts: list[str], k: int, min_similarity: float = 0.0) -> list[list[int]]:
        """The rows of each text's `k` nearest training items (`find`)."""
        return self.find(texts, k, min_similarity).rows

    def shown(self, rows: list[int]) -> list[tuple[str, float]]:
        """These training rows as the prompt shows them: (title, price)."""
        return [(self.titles[row], float(self.prices[row])) for row in rows]

    def neighbors(
        self, texts: list[str], k: int, min_similarity: float = 0.0
    ) -> list[list[tuple[str, float]]]:
        """Each text's `k` nearest training items as (title, price), most similar first."""
        return [self.shown(rows) for rows in self.nearest(texts, k, min_similarity)]

    def blocks(self, texts: list[str], k: int, format: str = "lines") -> list[str]:
        """Each text's neighbour block for its prompt (`prompt.neighbor_block`)."""
        return [neighbor_block(found, format) for found in self.neighbors(texts, k)]
