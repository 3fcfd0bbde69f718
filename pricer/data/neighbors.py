"""The training items most like a product, for its prompt (`data.neighbors`).

The index is the training items' unit-length TF-IDF rows (`features.py`, the same features
as the blend's classical model, which saves them in `tfidf.safetensors` beside the adapter)
with their titles, cut to a token budget, and prices (the training items, `train_items.parquet`). The nearest are by cosine similarity, the most similar
first, ties to the earlier training item, so that training, `test`, `predict` and the Space
retrieve the same items for the same text. A training item never retrieves itself.

Hand-written rather than scikit-learn's `NearestNeighbors`: its partition picks among tied
items arbitrarily, and an item's own row has to be left out of its own neighbours.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pricer.data.features import tfidf_vectorizer
from pricer.data.prompt import cut_to_tokens, neighbor_block
from pricer.options import OptionError

CHUNK = 1024  # queries a product with the rows, to bound memory: CHUNK x training items floats


@dataclass
class Retriever:
    """The k training items nearest a text, as (title, price) pairs.

    Args:
        vectorizer: The fitted TF-IDF vectorizer of the training items' texts.
        rows: The training items' TF-IDF rows (unit length, a scipy sparse matrix).
        titles: The training items' titles as prompts show them, in the rows' order.
        prices: Their prices, in the same order.
    """

    vectorizer: object
    rows: object
    titles: list[str]
    prices: list[float]

    def __post_init__(self) -> None:
        if not (len(self.titles) == len(self.prices) == self.rows.shape[0]):
            raise OptionError(
                f"{len(self.titles)} titles and {len(self.prices)} prices for {self.rows.shape[0]} "
                "TF-IDF rows: the training items do not match their features"
            )
        self._columns = self.rows.T.tocsc()  # once: every query multiplies by it (a Space's each quote)

    @classmethod
    def fit(cls, texts: list[str], titles: list[str], prices, tokenizer, title_tokens: int) -> Retriever:
        """The index of these training items, their titles cut to `title_tokens` tokens."""
        vectorizer = tfidf_vectorizer()
        rows = vectorizer.fit_transform(list(texts)).tocsr()
        return cls.of(vectorizer, rows, titles, prices, tokenizer, title_tokens)

    @classmethod
    def of(cls, vectorizer, rows, titles: list[str], prices, tokenizer, title_tokens: int) -> Retriever:
        """The index of fitted features (a saved TF-IDF model's), titles cut as `fit` cuts them."""
        cut = [
            text for text, _ in cut_to_tokens([" ".join(t.split()) for t in titles], tokenizer, title_tokens)
        ]
        return cls(vectorizer, rows, cut, [float(p) for p in prices])

    def nearest(self, texts: list[str], k: int, own_rows: list[int] | None = None) -> list[list[int]]:
        """The rows of the `k` training items most similar to each text, most similar first;
        `own_rows[i]`, the training row text i is (never its own neighbour), or None."""
        if k <= 0:
            return [[] for _ in texts]
        queries = self.vectorizer.transform(list(texts)).tocsr()
        k = min(k, self.rows.shape[0] - (1 if own_rows is not None else 0))
        found: list[list[int]] = []
        for start in range(0, len(texts), CHUNK):
            similarity = np.asarray(
                (queries[start : start + CHUNK] @ self._columns).todense(), dtype=np.float64
            )
            if own_rows is not None:
                for offset, own in enumerate(own_rows[start : start + CHUNK]):
                    if own is not None:
                        similarity[offset, own] = -np.inf
            # the most similar first, ties to the earlier row: a stable sort of -similarity
            order = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
            found.extend(order.tolist())
        return found

    def neighbors(
        self, texts: list[str], k: int, own_rows: list[int] | None = None
    ) -> list[list[tuple[str, float]]]:
        """Each text's `k` nearest training items as (title, price), most similar first."""
        return [
            [(self.titles[row], float(self.prices[row])) for row in rows]
            for rows in self.nearest(texts, k, own_rows)
        ]

    def blocks(self, texts: list[str], k: int, own_rows: list[int] | None = None) -> list[str]:
        """Each text's neighbour block for its prompt (`prompt.neighbor_block`)."""
        return [neighbor_block(found) for found in self.neighbors(texts, k, own_rows)]
