"""What an adapter folder holds for reading besides its weights, and the read-out it serves.

fit saves beside the adapter the TF-IDF model its blend reads (`tfidf.json`, `tfidf.safetensors`),
its price head when it fitted one (`price_head.safetensors`) and the training items (`train_items.parquet`: each item's text and price), with their SHA-256
in the recipe. Every read of the adapter (`test` on any data source, `predict`, the Space,
`Pricer.from_adapter`, a copy pulled from the Hub) serves the read-out fit chose from these
files and never refits them; the training items give a new source the same baselines as the
fit's own test. A blend whose TF-IDF files are not there is refused, naming them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from pricer.data.neighbors import Retriever
from pricer.options import OptionError
from pricer.read.blend import Blend, mix_text
from pricer.read.price_head import HEAD_FILE, PriceHead
from pricer.read.recipe import read_recipe
from pricer.read.tfidf import TFIDF_JSON, TFIDF_WEIGHTS, BlendError, TfidfPrice

TRAIN_ITEMS = "train_items.parquet"
SAVED = (TFIDF_JSON, TFIDF_WEIGHTS, HEAD_FILE, TRAIN_ITEMS)  # the files the recipe holds the hashes of


@dataclass(frozen=True)
class TrainItems:
    """The training items a run fitted its TF-IDF model and baselines on."""

    prices: list[float]
    texts: list[str]
    titles: list[str] | None = None  # for the prompts' neighbours

    def save(self, folder: Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        columns = {"text": pa.array(self.texts, pa.string()), "price": pa.array(self.prices, pa.float64())}
        if self.titles is not None:
            columns["title"] = pa.array(self.titles, pa.string())
        pq.write_table(pa.table(columns), Path(folder) / TRAIN_ITEMS)

    @classmethod
    def load(cls, folder: Path) -> TrainItems | None:
        """The items saved in `folder`; None when it has none."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = Path(folder) / TRAIN_ITEMS
        if not path.is_file():
            return None
        try:
            table = pq.read_table(path)
        except (OSError, pa.ArrowException) as error:
            raise BlendError(f"{path}: the training items cannot be read: {error}") from None
        if not {"text", "price"} <= set(table.column_names):
            raise BlendError(f"{path}: needs the columns text and price, has {table.column_names}")
        titles = table.column("title").to_pylist() if "title" in table.column_names else None
        return cls(table.column("price").to_pylist(), table.column("text").to_pylist(), titles)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def saved_hashes(folder: Path) -> dict[str, str]:
    """The SHA-256 of each saved read file in `folder`, for its recipe."""
    return {name: sha256(Path(folder) / name) for name in SAVED if (Path(folder) / name).is_file()}


def check_hashes(folder: Path, expected: dict[str, str] | None) -> None:
    """Each file the recipe has a hash for is there and unchanged, or a BlendError naming it."""
    for name, digest in (expected or {}).items():
        path = Path(folder) / name
        if not path.is_file():
            raise BlendError(f"{path} is missing: fit saved it with the adapter (its recipe holds its hash)")
        if sha256(path) != digest:
            raise BlendError(
                f"{path} is not the file fit saved (its SHA-256 differs from the recipe's): "
                "restore the adapter folder as fit wrote it, or retrain"
            )


@dataclass(frozen=True)
class ReadOut:
    """The read-out a model serves: the blend, the TF-IDF model and price head it reads when it
    has them, the training items for the baselines, and in words what is served and why."""

    blend: Blend
    partner: TfidfPrice | None = None
    head: PriceHead | None = None
    train_items: TrainItems | None = None
    served: str = "the LLM alone"

    def as_dict(self) -> dict:
        return {"served": self.served, **self.blend.as_dict()}


def describe(blend: Blend, where: str) -> str:
    """The read-out in words, as reports and the console say it."""
    scale = f", interval scale {blend.interval_scale:g}" if blend.interval_scale != 1 else ""
    if blend.uses_tfidf or blend.uses_head:
        mix = mix_text(blend.weight, blend.knn_share, blend.head_weight)
        return f"the blend {where} ({mix} in log price{scale})"
    return f"the LLM alone, as {where}{scale}"


def saved_read_out(folder: Path, with_items: bool = True, load: bool = True) -> ReadOut:
    """The read-out an adapter folder's run chose, from the files fit saved beside it (with its
    training items, for the baselines, unless `with_items` is false; with `load` false, the
    files are checked and the blend given, for a caller that loads the TF-IDF model itself)."""
    folder = Path(folder)
    recipe = read_recipe(folder)
    if recipe is None:
        return ReadOut(Blend(), served=f"the LLM alone: {folder} has no recipe (pricer.json)")
    check_hashes(folder, recipe.files)
    blend = Blend(**recipe.blend)
    items = TrainItems.load(folder) if with_items else None
    missing = [name for name in (TFIDF_JSON, TFIDF_WEIGHTS) if not (folder / name).is_file()]
    if blend.uses_tfidf and missing:
        raise BlendError(
            f"{folder} has no {' or '.join(missing)}, the TF-IDF model of the blend its run chose "
            f"({mix_text(blend.weight, blend.knn_share)}): copy it with the adapter's other files"
        )
    if blend.uses_head and not (folder / HEAD_FILE).is_file():
        raise BlendError(
            f"{folder} has no {HEAD_FILE}, the price head of the blend its run chose "
            f"({mix_text(blend.weight, blend.knn_share, blend.head_weight)}): copy it with the adapter's other files"
        )
    # loaded whenever saved: the baselines' TF-IDF model is the one fitted on these items
    partner = None if missing or not load else TfidfPrice.load(folder)
    head = PriceHead.load(folder) if blend.uses_head and load else None
    return ReadOut(blend, partner, head, items, describe(blend, f"fit chose, from {folder}"))


def saved_retriever(folder: Path, tokenizer, title_tokens: int, tfidf: TfidfPrice | None = None) -> Retriever:
    """The prompts' neighbour index an adapter's run trained with: its TF-IDF model's rows and
    its training items' titles and prices, as fit saved them (`tfidf`: that model, when the
    caller has loaded it already)."""
    folder = Path(folder)
    items = TrainItems.load(folder)
    if items is None or items.titles is None:
        raise BlendError(
            f"{folder}: its recipe shows neighbours in the prompt, and {TRAIN_ITEMS} with their titles is missing"
        )
    tfidf = tfidf or TfidfPrice.load(folder)
    try:
        return Retriever.of(
            tfidf.vectorizer, tfidf.rows, items.texts, items.titles, items.prices, tokenizer, title_tokens
        )
    except OptionError as error:
        raise BlendError(f"{folder}: {error}") from None
