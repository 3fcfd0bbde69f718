"""The LightningDataModule: curated, category-filtered splits as tokenized batches."""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
from jsonargparse.typing import NonNegativeFloat, NonNegativeInt, PositiveInt
from torchdata.stateful_dataloader import StatefulDataLoader

from pricer.base.load import load_tokenizer, pricer_cache, tokenizer_source
from pricer.data.batches import IGNORE_INDEX, PadCollator, longest_batch, tokenize_examples
from pricer.data.categories import CATEGORIES, Category
from pricer.data.curate import Curated, CurationSpec, curate, split_file
from pricer.data.curated import load_curated
from pricer.data.neighbor_prompts import NeighborPrompts
from pricer.data.neighbors import Retriever
from pricer.data.products import load_products
from pricer.data.prompt import NeighborFormat, text_from_prompt
from pricer.data.raw import RAW_URL, SourceError
from pricer.data.rules import CurationRules
from pricer.data.source import parse_source
from pricer.data.splits import SPLITS
from pricer.data.test_ledger import ledger_for
from pricer.options import OptionError

# kept beside the tokens in every batch: reports name the item, the blend reads its text
KEPT_COLUMNS = ("price", "title", "category", "text")


class PriceDataModule(L.LightningDataModule):
    """Curated product splits for price prediction, from raw Amazon metadata or a curated dataset.

    Args:
        source: Raw metadata or a curated dataset. Raw: Amazon Reviews 2023
            (`hf://datasets/McAuley-Lab/Amazon-Reviews-2023` or a local folder holding
            `raw/meta_categories/meta_<Category>.jsonl`); curated: a Hub repo id, a local folder
            or file, used as it is.
        revision: A Hub source's branch, tag or commit. For the raw
            metadata it is resolved to its commit once, every file is read at that commit, and
            the commit is recorded in `curation.json` and the dataset card; set a commit id to
            curate the same data again later.
        categories: Categories to curate from a raw source. Each item keeps its own.
        tokenizer: The tokenizer of the token rules and batches. It follows `model.base_model`.
        train_size: Training items (null: every usable one).
        val_size: Validation items.
        test_size: Test items. Taken first, so the train size never changes the test split.
        seed: Seed of the splits and of balanced sampling.
        rules: The curation rules (default: the course's).
        balance: Balanced sampling over price. Each whole-dollar bucket below `balance_below`
            is capped at `balance_cap` items (the course's full-data rule).
        balance_cap: Items a whole-dollar bucket at most.
        balance_below: Buckets from this price up are kept whole.
        balance_weights: Category weights inside a full bucket. Default: 1 each.
        cache_dir: The curated splits' cache. Default: `$HF_HOME/pricer/datasets`.
        num_proc: Curation processes. Default: the machine's cores, at most 8.
        batch_size: Items an optimizer step, on each process. Taken in passes of
            `model.micro_batch_size`; `FitBatchSize` sets it from its `effective_batch_size`.
        eval_batch_size: Items a validation or test batch. Default: batch_size.
        num_workers: DataLoader worker processes.
        predict_source: What `predict` prices. Default: the test split. A JSONL file of product
            texts (raw records, `text` or `prompt` per line) or a curated dataset.
        neighbors: Training items a prompt shows, with their prices (0: none). They sit
            between the question and the product's text (0 keeps the course's prompt), retrieved
            by cosine on the TF-IDF features of the train split, never an item itself or a
            duplicate of it (the same title); cached beside the curated splits.
        neighbor_title_tokens: Tokens of a neighbour's title at most, in the prompt.
        neighbor_format: The neighbours as lines, summary or both. lines: a line each,
            its title and price; summary: one line of their prices' median, lowest and highest;
            both: the lines, then the summary.
        neighbor_min_similarity: A neighbour's least cosine similarity. Only training items
            above it are shown (0: any that shares a word), so a product unlike them all gets
            fewer or none, in training and in every read.
        neighbor_dropout: Training prompts without neighbours, a share. Drawn once with `seed`,
            so the model still learns to read a product's own text; validation, test and every
            read show them all.
    """

    def __init__(
        self,
        source: str = RAW_URL,
        revision: str = "main",
        categories: list[Category] | None = None,
        tokenizer: str | None = None,
        train_size: NonNegativeInt | None = 25_000,
        val_size: NonNegativeInt = 500,
        test_size: NonNegativeInt = 2_000,
        seed: int = 42,
        rules: CurationRules | None = None,
        balance: bool = False,
        balance_cap: PositiveInt = 1200,
        balance_below: NonNegativeFloat = 240.0,
        balance_weights: dict[str, float] | None = None,
        cache_dir: str | None = None,
        num_proc: PositiveInt | None = None,
        batch_size: PositiveInt = 4,
        eval_batch_size: PositiveInt | None = None,
        num_workers: NonNegativeInt = 0,
        predict_source: str | None = None,
        neighbors: NonNegativeInt = 0,
        neighbor_title_tokens: PositiveInt = 24,
        neighbor_format: NeighborFormat = "lines",
        neighbor_min_similarity: NonNegativeFloat = 0.0,
        neighbor_dropout: NonNegativeFloat = 0.0,
    ) -> None:
        super().__init__()
        if categories is not None and len(categories) == 0:
            raise OptionError("data.categories is empty: name at least one category (null means Appliances)")
        categories = list(categories or ["Appliances"])
        twice = sorted({c for c in categories if categories.count(c) > 1})
        if twice:
            raise OptionError(f"data.categories names {', '.join(twice)} more than once")
        unknown = [c for c in categories if c not in CATEGORIES]
        if unknown:
            raise OptionError(f"data.categories: unknown {unknown}; choose from {', '.join(CATEGORIES)}")
        if train_size == 0:
            raise OptionError(
                "data.train_size 0: training needs items; null takes every usable item that is not "
                "in validation or test"
            )
        self.source = source
        self.data_source = parse_source(source)  # checked now: a path that is not here stops early
        if not str(revision).strip():
            raise OptionError(
                "data.revision is empty: name a branch, tag or commit of the Hub source (default main)"
            )
        self.revision = str(revision).strip()
        if self.revision != "main" and not self.data_source.on_hub:
            raise OptionError(
                f"data.revision {self.revision!r}: a revision pins a Hub source, and data.source "
                f"{source!r} is a local {'folder' if Path(self.data_source.location).is_dir() else 'file'}"
            )
        self.categories = categories
        self.tokenizer_name = tokenizer
        # jsonargparse's range types are int subclasses: plain ints for the cache key and checkpoints
        self.train_size = None if train_size is None else int(train_size)
        self.val_size, self.test_size = int(val_size), int(test_size)
        self.seed = seed
        self.rules = rules or CurationRules()
        self.balance = balance
        self.balance_cap, self.balance_below = int(balance_cap), float(balance_below)
        self.balance_weights = balance_weights
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else pricer_cache() / "datasets"
        self.num_proc = int(num_proc or min(8, os.cpu_count() or 1))
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size or batch_size)
        self.num_workers = int(num_workers)
        self.predict_source = predict_source
        self.neighbors, self.neighbor_title_tokens = int(neighbors), int(neighbor_title_tokens)
        self.neighbor_format = neighbor_format
        if not float(neighbor_min_similarity) < 1:
            raise OptionError(
                f"data.neighbor_min_similarity {neighbor_min_similarity}: a cosine similarity below 1 "
                "(0: any item that shares a word)"
            )
        self.neighbor_min_similarity = float(neighbor_min_similarity)
        if not float(neighbor_dropout) < 1:
            raise OptionError(
                f"data.neighbor_dropout {neighbor_dropout}: the share of training prompts shown without "
                "neighbours is below 1 (0: every prompt shows them)"
            )
        self.neighbor_dropout = float(neighbor_dropout)
        # a trained adapter's neighbour index (`use_index`), whose items are not this source's
        self.saved_index: Retriever | None = None
        self._neighbor_prompts: NeighborPrompts | None = None
        self.datasets: dict = {}
        self.curated: Curated | None = None
        self._splits = None
        self._tokenizer = None
        self._products: list[dict] | None = None

    @property
    def is_raw(self) -> bool:
        return self.data_source.is_raw

    def _require_tokenizer(self) -> str:
        if not self.tokenizer_name:
            raise ValueError("data.tokenizer is not set (it follows model.base_model in the CLI)")
        return self.tokenizer_name

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self._require_tokenizer())
        return self._tokenizer

    def spec(self) -> CurationSpec:
        return CurationSpec(
            source=self.source,
            categories=self.categories,
            rules=self.rules,
            tokenizer=self._require_tokenizer(),
            train_size=self.train_size,
            val_size=self.val_size,
            test_size=self.test_size,
            seed=self.seed,
            balance=self.balance,
            balance_cap=self.balance_cap,
            balance_below=self.balance_below,
            balance_weights=self.balance_weights,
            revision=self.revision,
        )

    def curate(self) -> Curated:
        """Curate the raw source into cached splits (a second call reuses the cache)."""
        if not self.is_raw:
            where = (
                "a Hub dataset id (there is no local folder by that name)"
                if self.data_source.on_hub
                else f"the curated dataset at {self.data_source.location}"
            )
            raise SourceError(
                f"data.source {self.source!r} is {where}, not raw Amazon Reviews 2023 metadata: "
                "there is nothing to curate (a raw source is hf://datasets/McAuley-Lab/Amazon-Reviews-2023 "
                "or a folder holding raw/meta_categories/meta_<Category>.jsonl)"
            )
        spec = self.spec()
        self.curated = curate(spec, tokenizer_source(spec.tokenizer), self.cache_dir, num_proc=self.num_proc)
        return self.curated

    def prepare_data(self) -> None:
        if self.is_raw:
            curated = self.curate()
            state = "reused from the cache" if curated.cached else "curated"
            print(f"data: {state} in {curated.folder}\n{curated.accounting.table()}")
        else:
            load_curated(self.data_source, self.revision)  # downloads once, on one process

    def load_splits(self):
        """The curated splits as a DatasetDict (untokenized), loaded once and kept: setup,
        the baselines and the Hub staging all read them."""
        from datasets import DatasetDict, load_dataset

        if self._splits is None:
            if not self.is_raw:
                self._splits = load_curated(self.data_source, self.revision)
            else:
                curated = self.curated or self.curate()
                files = {
                    s: str(split_file(curated.folder, s))
                    for s in SPLITS
                    if split_file(curated.folder, s).is_file()
                }
                self._splits = DatasetDict(load_dataset("parquet", data_files=files))
        return self._splits

    def use_index(self, retriever: Retriever) -> None:
        """Retrieve the prompts' neighbours from a trained adapter's saved training items."""
        self.saved_index, self._neighbor_prompts = retriever, None

    @property
    def neighbor_prompts(self) -> NeighborPrompts:
        """The prompts' neighbours, from the data options as they are when first asked for."""
        if self._neighbor_prompts is None:
            own = self.neighbors and self.saved_index is None  # the index is this source's train split
            train = self.load_splits().get("train") if own else None
            folder = self.curated.folder if self.curated is not None else self.cache_dir
            self._neighbor_prompts = NeighborPrompts(
                self.neighbors,
                self.neighbor_title_tokens,
                self.neighbor_format,
                self.neighbor_min_similarity,
                self.neighbor_dropout,
                self.seed,
                self.tokenizer,
                self.source,
                train=train,
                cache=folder / "neighbors",
                index=self.saved_index,
            )
        return self._neighbor_prompts

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        tokenizer = self.tokenizer
        for name, split in self.load_splits().items():
            if self.neighbors:
                prompts = self.neighbor_prompts.prompts(list(split["prompt"]), name)
                split = split.remove_columns("prompt").add_column("prompt", prompts)
            self.datasets[name] = split.map(
                tokenize_examples,
                batched=True,
                fn_kwargs={"tokenizer": tokenizer},
                remove_columns=[c for c in split.column_names if c not in KEPT_COLUMNS],
                desc=f"tokenizing {name}",
            )
        if self.neighbors:
            print(f"data: neighbours in the prompt\n{self.neighbor_prompts.table()}")

    def _split(self, name: str):
        if name not in self.datasets:
            raise ValueError(
                f"data.source {self.source!r} has no {name!r} split (it has: {', '.join(self.datasets) or 'none'})"
            )
        return self.datasets[name]

    def _loader(self, name: str, shuffle: bool, batch_size: int, prompts: bool = True) -> StatefulDataLoader:
        import torch

        generator = torch.Generator().manual_seed(self.seed) if shuffle else None
        return StatefulDataLoader(
            self._split(name),
            batch_size=batch_size,
            shuffle=shuffle,
            generator=generator,
            collate_fn=PadCollator(self.tokenizer.pad_token_id, prompts=prompts),
            num_workers=self.num_workers,
        )

    def test_ledger(self) -> Path:
        """Where every read of this source's test split is recorded (pricer/data/test_ledger.py):
        beside the splits curated here, or in the cache for a curated source."""
        folder = self.curated.folder if self.curated is not None else None
        return ledger_for(folder, self.cache_dir, self.source, self.revision)

    def trial_batch(self, size: int) -> dict:
        """The `size` longest training items, collated as training batches are: the widest batch
        of that size, padded and masked as a real one (copies of one item would have no padding,
        and so another attention path), for the batch size search."""
        return longest_batch(self._split("train"), size, self.tokenizer.pad_token_id)

    def train_dataloader(self) -> StatefulDataLoader:
        return self._loader("train", shuffle=True, batch_size=self.batch_size, prompts=False)

    def val_dataloader(self) -> StatefulDataLoader:
        return self._loader("validation", shuffle=False, batch_size=self.eval_batch_size)

    def reading_dataloader(self, name: str) -> StatefulDataLoader:
        """A split's prompts in its order, batched as validation reads them."""
        return self._loader(name, shuffle=False, batch_size=self.eval_batch_size)

    def test_dataloader(self) -> StatefulDataLoader:
        return self._loader("test", shuffle=False, batch_size=self.eval_batch_size)

    def predict_dataloader(self) -> StatefulDataLoader:
        if "predict" not in self.datasets:
            self.datasets["predict"] = self._predict_items()
        return self._loader("predict", shuffle=False, batch_size=self.eval_batch_size)

    def products(self) -> list[dict] | None:
        """The products of a JSONL `predict_source`, read and checked once (every line priced
        or stopped with its number); None for other sources. The CLI asks before any work."""
        source = self.predict_source
        if source is None or Path(source).suffix not in (".jsonl", ".json"):
            return None
        if self._products is None:
            self._products = load_products(source, self.rules, self.tokenizer)
        return self._products

    def _predict_items(self):
        from datasets import Dataset

        source = self.predict_source
        if source is None:
            return self._split("test")
        if Path(source).suffix in (".jsonl", ".json") and Path(source).is_file():
            items = self.products()
        else:
            splits = load_curated(source)
            split = splits["test"] if "test" in splits else next(iter(splits.values()))
            items = [{"title": r["title"], "prompt": r["prompt"]} for r in split]
        shown = self.neighbor_prompts.prompts([i["prompt"] for i in items])
        prompts = self.tokenizer(shown, add_special_tokens=True)["input_ids"]
        return Dataset.from_list(
            [
                {
                    "title": i["title"],
                    "category": "",
                    "text": text_from_prompt(i["prompt"]),
                    "input_ids": ids,
                    "labels": [IGNORE_INDEX] * len(ids),
                }
                for i, ids in zip(items, prompts, strict=True)
            ]
        )

    def train_prices_and_texts(self) -> tuple[list[float], list[str]] | None:
        """The train split's prices and texts, for the baselines; None when there is none."""
        splits = self.load_splits()
        if "train" not in splits or len(splits["train"]) == 0:
            return None
        return list(splits["train"]["price"]), list(splits["train"]["text"])

    def train_titles(self) -> list[str] | None:
        """The train split's titles, in its order, for the neighbours an adapter serves."""
        splits = self.load_splits()
        return list(splits["train"]["title"]) if "train" in splits and len(splits["train"]) else None

    def test_texts(self) -> list[str]:
        return list(self.load_splits()["test"]["text"])
