"""The neighbours in the prompt (`data.neighbors`): the index they come from, each split's
retrieval (cached beside the curated splits), the dropout of training prompts, and their
accounting. The data module holds one, built from its options and splits when first used."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pricer.data.accounting import count_table
from pricer.data.neighbor_cache import retrieve
from pricer.data.neighbors import Retriever
from pricer.data.prompt import neighbor_block, text_from_prompt, with_neighbors
from pricer.options import OptionError

# Which training prompts go without neighbours: a random stream of its own beside the split seed's
DROPOUT_STREAM = 30


@dataclass
class NeighborPrompts:
    """The similar training items each prompt shows.

    Args:
        k: Items a prompt shows (`data.neighbors`; 0: none).
        title_tokens: Tokens of each item's title (`data.neighbor_title_tokens`).
        format: How they are shown (`data.neighbor_format`).
        min_similarity: Only items above this cosine similarity (`data.neighbor_min_similarity`).
        dropout: Share of the training prompts shown without them (`data.neighbor_dropout`).
        seed: The split seed, which draws the prompts left without.
        tokenizer: The base model's, which cuts the titles.
        source: The data source, as a message names it.
        train: The source's train split (curated), the index when no `index` is given.
        cache: Where the splits' retrievals are cached; None: not cached.
        index: A trained adapter's saved index (its items are not this source's).
    """

    k: int
    title_tokens: int
    format: str
    min_similarity: float
    dropout: float
    seed: int
    tokenizer: object
    source: str
    train: object = None
    cache: Path | None = None
    index: Retriever | None = None
    own_index: bool = False  # whether `index` was built from `train` (saved with the adapter)
    rows: dict[str, list[list[int]]] = field(default_factory=dict)  # each split's items shown
    accounting: dict = field(default_factory=dict)  # what retrieval did for each split

    def retriever(self) -> Retriever:
        """The index the neighbours come from: the one given, or built once from `train`."""
        if self.index is None:
            if self.train is None or len(self.train) == 0:
                raise OptionError(
                    f"data.neighbors {self.k}: the prompts' neighbours are training items, and "
                    f"data.source {self.source!r} has no train split (a trained adapter brings its own: "
                    "--model.adapter)"
                )
            texts = [text_from_prompt(p) for p in self.train["prompt"]]
            self.index = Retriever.fit(
                texts, list(self.train["title"]), list(self.train["price"]), self.tokenizer, self.title_tokens
            )
            self.own_index = True
        return self.index

    def prompts(self, prompts: list[str], split: str | None = None) -> list[str]:
        """The prompts with their neighbour blocks (as they are with k 0). A split's neighbours
        are cached and counted in `accounting`; `dropout` of the train split's prompts go
        without."""
        if not self.k:
            return list(prompts)
        index = self.retriever()
        texts = [text_from_prompt(p) for p in prompts]
        started = time.perf_counter()
        cache = self.cache if split else None
        retrieved = retrieve(index, texts, self.k, cache, self.min_similarity)
        shown = [True] * len(prompts)
        if split == "train" and self.dropout:
            draw = np.random.default_rng([self.seed, DROPOUT_STREAM]).random(len(prompts))
            shown = (draw >= self.dropout).tolist()
        if split:
            self.accounting[split] = {
                "prompts": len(prompts),
                "with_neighbors": sum(shown),
                "left_out_as_duplicates": retrieved.found.left_out,
                "cached": retrieved.cached,
                "seconds": round(time.perf_counter() - started, 2),
            }
            self.rows[split] = retrieved.found.rows
        return [
            with_neighbors(p, neighbor_block(index.shown(rows), self.format) if show else "")
            for p, rows, show in zip(prompts, retrieved.found.rows, shown, strict=True)
        ]

    def table(self) -> str:
        """The neighbours' accounting, a Markdown table like curation's, as printed at setup."""
        rows = [(f"training items in the index (data.neighbors {self.k})", len(self.retriever().titles))]
        for split, counts in self.accounting.items():
            rows.append((f"{split}: prompts with neighbours", counts["with_neighbors"]))
            if counts["with_neighbors"] != counts["prompts"]:
                rows.append(
                    (
                        f"{split}: without (data.neighbor_dropout {self.dropout:g})",
                        counts["prompts"] - counts["with_neighbors"],
                    )
                )
            rows.append((f"{split}: left out as the items' own duplicates", counts["left_out_as_duplicates"]))
        return count_table("neighbours", rows)

    def median(self, split: str, count: int) -> np.ndarray | None:
        """The median price of the neighbours each of a split's first `count` prompts shows (the
        same k, the same retriever): a baseline beside the LLM that reads them; None without."""
        rows = self.rows.get(split) if self.k else None
        if not rows:
            return None
        prices = np.asarray(self.retriever().prices, dtype=np.float64)
        return np.array([np.median(prices[r]) if r else np.nan for r in rows[:count]])
