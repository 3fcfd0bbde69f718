"""The data module's neighbours in the prompt (`data.neighbors`): the index they come from, each
split's retrieval (cached beside the curated splits), the dropout of training prompts, and their
accounting. A mixin of `PriceDataModule`, kept beside it."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from pricer.data.accounting import count_table
from pricer.data.neighbor_cache import retrieve
from pricer.data.neighbors import Retriever
from pricer.data.prompt import neighbor_block, text_from_prompt, with_neighbors
from pricer.options import OptionError

# Which training prompts go without neighbours: a random stream of its own beside the split seed's
DROPOUT_STREAM = 30


class NeighborPrompts:
    """Retrieval for the prompts of a data module that has `neighbors`, `neighbor_title_tokens`,
    `neighbor_format`, `neighbor_min_similarity`, `neighbor_dropout`, `seed`, `source`, `retriever`, `_own_index`, `neighbor_rows`,
    `neighbor_accounting`, `curated`, `cache_dir`, `tokenizer` and `load_splits()`."""

    def use_index(self, retriever: Retriever) -> None:
        """Retrieve the prompts' neighbours from a trained adapter's saved training items."""
        self.retriever, self._own_index = retriever, False

    def neighbor_index(self) -> Retriever:
        """The index the prompts' neighbours come from: set by `use_index`, or built once from
        this source's train split."""
        if self.retriever is None:
            train = self.load_splits().get("train")
            if train is None or len(train) == 0:
                raise OptionError(
                    f"data.neighbors {self.neighbors}: the prompts' neighbours are training items, and "
                    f"data.source {self.source!r} has no train split (a trained adapter brings its own: "
                    "--model.adapter)"
                )
            prompts = list(train["prompt"])
            texts = [text_from_prompt(p) for p in prompts]
            self.retriever = Retriever.fit(
                texts, list(train["title"]), list(train["price"]), self.tokenizer, self.neighbor_title_tokens
            )
            self._own_index = True
        return self.retriever

    def neighbor_prompts(self, prompts: list[str], split: str | None = None) -> list[str]:
        """The prompts with their neighbour blocks (as they are with data.neighbors 0). A split's
        neighbours are cached beside the curated splits and counted in `neighbor_accounting`;
        `data.neighbor_dropout` of the train split's prompts go without."""
        if not self.neighbors:
            return list(prompts)
        index = self.neighbor_index()
        texts = [text_from_prompt(p) for p in prompts]
        started = time.perf_counter()
        cache = self._neighbor_cache() if split else None
        retrieved = retrieve(index, texts, self.neighbors, cache, self.neighbor_min_similarity)
        shown = [True] * len(prompts)
        if split == "train" and self.neighbor_dropout:
            draw = np.random.default_rng([self.seed, DROPOUT_STREAM]).random(len(prompts))
            shown = (draw >= self.neighbor_dropout).tolist()
        if split:
            self.neighbor_accounting[split] = {
                "prompts": len(prompts),
                "with_neighbors": sum(shown),
                "left_out_as_duplicates": retrieved.found.left_out,
                "cached": retrieved.cached,
                "seconds": round(time.perf_counter() - started, 2),
            }
            self.neighbor_rows[split] = retrieved.found.rows
        return [
            with_neighbors(p, neighbor_block(index.shown(rows), self.neighbor_format) if show else "")
            for p, rows, show in zip(prompts, retrieved.found.rows, shown, strict=True)
        ]

    def _neighbor_cache(self) -> Path:
        """Where the splits' neighbours are cached: beside the curated splits, when curated here."""
        return (self.curated.folder if self.curated is not None else self.cache_dir) / "neighbors"

    def neighbors_table(self) -> str:
        """The neighbours' accounting, a Markdown table like curation's, as printed at setup."""
        index = self.neighbor_index()
        rows = [(f"training items in the index (data.neighbors {self.neighbors})", len(index.titles))]
        for split, counts in self.neighbor_accounting.items():
            rows.append((f"{split}: prompts with neighbours", counts["with_neighbors"]))
            if counts["with_neighbors"] != counts["prompts"]:
                rows.append(
                    (
                        f"{split}: without (data.neighbor_dropout {self.neighbor_dropout:g})",
                        counts["prompts"] - counts["with_neighbors"],
                    )
                )
            rows.append((f"{split}: left out as the items' own duplicates", counts["left_out_as_duplicates"]))
        return count_table("neighbours", rows)

    def neighbor_median(self, split: str, count: int) -> np.ndarray | None:
        """The median price of the neighbours each of a split's first `count` prompts shows (the
        same k, the same retriever): a baseline beside the LLM that reads them; None without."""
        rows = self.neighbor_rows.get(split) if self.neighbors else None
        if not rows:
            return None
        prices = np.asarray(self.neighbor_index().prices, dtype=np.float64)
        return np.array([np.median(prices[r]) if r else np.nan for r in rows[:count]])
