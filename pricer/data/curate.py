"""Curation: raw category files -> accounted, deduplicated, split Parquet files, cached.

Memory stays flat however large the category: lines stream in chunks to worker processes
(a bounded number in flight), kept rows stream to a staging Parquet file, and only small
arrays (price, category, hash per kept row) and the set of product keys stay in memory.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pricer import hub_calls as hub
from pricer.base.load import tokenizer_digest
from pricer.data import raw
from pricer.data.accounting import Accounting
from pricer.data.raw import RAW_REPO
from pricer.data.records import ChunkResult
from pricer.data.rules import CurationRules
from pricer.data.source import parse_source
from pricer.data.splits import SPLITS, UNASSIGNED, assign_splits, balanced_sample, key_hash
from pricer.data.workers import chunk_results
from pricer.files import place_folder

# A commit id, whole or abbreviated (7 hex digits at least), as opposed to a branch or tag.
COMMIT = re.compile(r"[0-9a-f]{7,40}")

DUPLICATE = "duplicate"
NOT_SAMPLED = "not_sampled"
SURPLUS = "surplus"

# Bump when curation's output changes, so old caches are not reused.
# 2: the cache is keyed by the raw files' content as well (a folder per version of the data).
# 3: a `tokens` column (prompt and completion together), counted in the workers.
FORMAT_VERSION = 3

TOKENS = pa.field("tokens", pa.int32())
PLAIN_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("title", pa.string()),
        ("category", pa.string()),
        ("price", pa.float64()),
        ("text", pa.string()),
        ("prompt", pa.string()),
        ("completion", pa.string()),
    ]
)
SCHEMA = PLAIN_SCHEMA.append(TOKENS)


class CurationError(ValueError):
    """Curation cannot produce the splits asked for; the message says why."""


@dataclass
class CurationSpec:
    """Everything that determines the curated splits; its hash names the cache folder."""

    source: str
    categories: list[str]
    rules: CurationRules
    tokenizer: str
    train_size: int | None
    val_size: int
    test_size: int
    seed: int
    balance: bool = False
    balance_cap: int = 1200
    balance_below: float = 240.0
    balance_weights: dict[str, float] | None = None
    revision: str = "main"
    count_tokens: bool = True  # the `tokens` column; False saves a tokenizer call an item

    @property
    def schema(self) -> pa.Schema:
        return SCHEMA if self.count_tokens else PLAIN_SCHEMA

    def fingerprint(self, tokenizer_digest: str) -> str:
        """The cache folder's name: the tokenizer counts by its content (`tokenizer_digest`,
        pricer.base.load), not by its name, so one tokenizer from any place shares one cache."""
        data = {
            "version": FORMAT_VERSION,
            "source": self.source,
            "categories": self.categories,
            "rules": self.rules.as_dict(),
            "tokenizer": tokenizer_digest,
            "sizes": [self.train_size, self.val_size, self.test_size],
            "seed": self.seed,
            "balance": [self.balance, self.balance_cap, self.balance_below, self.balance_weights]
            if self.balance
            else False,
        }
        if not self.count_tokens:
            data["count_tokens"] = False
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def sizes(self) -> dict[str, int | None]:
        return {"train": self.train_size, "validation": self.val_size, "test": self.test_size}


@dataclass
class Curated:
    folder: Path
    accounting: Accounting
    cached: bool

    def split_file(self, split: str) -> Path:
        return split_file(self.folder, split)


def split_file(folder: Path, split: str) -> Path:
    """The Hub's layout for a split, so `load_dataset(folder)` reads the splits back."""
    return folder / "data" / f"{split}-00000-of-00001.parquet"


def curate(
    spec: CurationSpec,
    tokenizer_source: str,
    cache_dir: Path,
    num_proc: int = 1,
    chunk_size: int = 500,
) -> Curated:
    """Curate the splits `spec` describes, or reuse them from the cache.

    The cache is keyed by what decides the splits (`spec`, its tokenizer by content) and by the
    raw files' content: their sizes and modification times here, their content hashes on the
    Hub. Offline, a Hub source reuses the newest splits curated from it, with a note. Reused
    splits are checked first (every Parquet footer readable, the row counts the accounting
    saved); splits that do not verify are curated again, with a message naming the folder.
    """
    digest = tokenizer_digest(tokenizer_source)  # loads the tokenizer once
    base = Path(cache_dir).expanduser() / spec.fingerprint(digest)
    version, unreachable, commit = source_version(spec)
    if version is None:
        reusable = sorted(
            (f for f in base.glob("*") if _curated_at(f, spec.revision)), key=lambda f: f.stat().st_mtime
        )
        if reusable and _verify(reusable[-1]) is None:
            print(f"curate: {unreachable}; reusing the splits curated from it in {reusable[-1]}")
            return Curated(reusable[-1], Accounting.load(reusable[-1] / "accounting.json"), cached=True)
        version = "unknown"  # curation itself will say what is wrong (it needs the files)
    folder = base / version
    if (folder / "accounting.json").is_file():
        problem = _verify(folder)
        if problem is None:
            return Curated(folder, Accounting.load(folder / "accounting.json"), cached=True)
        print(f"curate: the cached splits in {folder} do not verify ({problem}); curating again")
        shutil.rmtree(folder)
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "data").mkdir(parents=True)
    try:
        accounting = _curate_into(spec, tokenizer_source, digest, tmp, num_proc, chunk_size, commit)
        place_folder(tmp, folder)  # unless another process finished the same curation first
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Curated(folder, accounting, cached=False)


def source_version(spec: CurationSpec) -> tuple[str | None, str | None, str | None]:
    """(version, why not, commit): a short hash of the raw files' content as far as it can be
    known without reading them, or None and why when the Hub cannot be reached; on the Hub, the
    commit `spec.revision` names, which every file is then read at."""
    source = parse_source(spec.source)
    commit = None
    if source.on_hub:
        try:
            commit = hub.dataset_commit(RAW_REPO, spec.revision)
        except Exception as error:  # offline, no such revision, or the Hub refused
            from huggingface_hub.errors import RevisionNotFoundError

            if isinstance(error, RevisionNotFoundError):
                raise raw.SourceError(
                    f"data.revision {spec.revision!r}: {RAW_REPO} has no such branch, tag or commit"
                ) from None
            where = f"{RAW_REPO} at revision {spec.revision!r}"
            return None, f"cannot reach the Hub to see {where} ({type(error).__name__}: {error})", None
    state: dict = {"commit": commit} if commit else {}
    for category in spec.categories:
        path = source.category_file(category, commit)
        if source.on_hub:
            try:
                state[category] = hub.hub_file_version(path)
            except Exception as error:  # offline, or the Hub refused
                return (
                    None,
                    f"cannot reach the Hub to see whether {path} changed ({type(error).__name__})",
                    commit,
                )
        else:
            stat = Path(path).stat() if Path(path).is_file() else None
            state[category] = [stat.st_size, stat.st_mtime_ns] if stat else None
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()[:16], None, commit


def _curated_at(folder: Path, revision: str) -> bool:
    """A finished curation in `folder`, of the raw data at `revision` when that is a commit id
    (a branch may have moved since, so any curation of the source counts for a branch)."""
    if not (folder / "accounting.json").is_file():
        return False
    if not COMMIT.fullmatch(revision):
        return True
    try:
        recorded = json.loads((folder / "curation.json").read_text()).get("commit") or ""
    except (OSError, ValueError):
        return False
    return recorded.startswith(revision)


def _verify(folder: Path) -> str | None:
    """Why a cached curation cannot be trusted, or None when every split reads back whole."""
    try:
        accounting = Accounting.load(folder / "accounting.json")
    except Exception as error:  # a truncated or hand-edited accounting
        return f"accounting.json cannot be read: {error}"
    for split in SPLITS:
        expected = accounting.splits.get(split, 0)
        file = split_file(folder, split)
        if not file.is_file():
            if expected:
                return f"{file.name} is missing"
            continue
        try:
            rows = pq.read_metadata(file).num_rows
        except Exception as error:  # pyarrow's ArrowInvalid and OSError
            return f"{file.name} is not readable Parquet: {error}"
        if rows != expected:
            return f"{file.name} holds {rows} rows where the accounting says {expected}"
    return None


def _curate_into(
    spec: CurationSpec,
    tokenizer_source: str,
    digest: str,
    out: Path,
    num_proc: int,
    chunk_size: int,
    commit: str | None,
) -> Accounting:
    accounting = Accounting()
    seen: set[str] = set()
    prices: list[np.ndarray] = []
    categories: list[np.ndarray] = []
    hashes: list[np.ndarray] = []
    staging = out / "staging.parquet"
    with pq.ParquetWriter(staging, spec.schema) as writer:
        for category, result, n_lines in chunk_results(spec, tokenizer_source, num_proc, chunk_size, commit):
            accounting.read += n_lines
            accounting.read_by_category[category] += n_lines
            rows = _account(result, accounting, seen)
            if not rows:
                continue
            writer.write_table(pa.Table.from_pylist(rows, schema=spec.schema))
            prices.append(np.array([r["price"] for r in rows]))
            categories.append(np.full(len(rows), spec.categories.index(category), dtype=np.int16))
            hashes.append(np.array([key_hash(spec.seed, r["key"]) for r in rows], dtype=np.uint64))
    if not prices:
        raise CurationError(
            f"no items left after curation of {', '.join(spec.categories)} from {spec.source}: "
            f"read {accounting.read}, dropped {dict(accounting.dropped)}"
        )
    price = np.concatenate(prices)
    accounting.usable = len(price)
    category = np.concatenate(categories)
    hash_ = np.concatenate(hashes)

    eligible = np.ones(len(price), dtype=bool)
    if spec.balance:
        weights = np.array([(spec.balance_weights or {}).get(c, 1.0) for c in spec.categories])
        eligible = balanced_sample(price, category, weights, spec.balance_cap, spec.balance_below, spec.seed)
        accounting.drop(NOT_SAMPLED, count=int((~eligible).sum()))
    _check_sizes(spec, int(eligible.sum()))
    assignment = assign_splits(hash_, eligible, spec.sizes)
    accounting.drop(SURPLUS, count=int((eligible & (assignment == UNASSIGNED)).sum()))

    _write_splits(staging, assignment, out, spec.schema)
    staging.unlink()
    for index, name in enumerate(SPLITS):
        accounting.splits[name] = int((assignment == index).sum())
    accounting.kept = int((assignment != UNASSIGNED).sum())
    for index, name in enumerate(spec.categories):
        accounting.kept_by_category[name] = int(((assignment != UNASSIGNED) & (category == index)).sum())
    accounting.check()
    accounting.save(out / "accounting.json")
    (out / "curation.json").write_text(
        json.dumps(
            {
                "source": spec.source,
                "revision": spec.revision if commit else None,
                "commit": commit,
                "categories": spec.categories,
                "rules": spec.rules.as_dict(),
                "tokenizer": spec.tokenizer,
                "tokenizer_digest": digest,
                "sizes": spec.sizes,
                "seed": spec.seed,
                "balance": spec.balance,
            },
            indent=2,
        )
        + "\n"
    )
    return accounting


def _account(result: ChunkResult, accounting: Accounting, seen: set[str]) -> list[dict]:
    for reason, where in result.drops:
        accounting.drop(reason, where)
    rows = []
    for row in result.rows:
        if row["key"] in seen:
            accounting.drop(DUPLICATE, f"{row['category']}: {row['key']} ({row['title'][:60]})")
            continue
        seen.add(row["key"])
        rows.append(row)
    return rows


def _check_sizes(spec: CurationSpec, available: int) -> None:
    wanted = spec.val_size + spec.test_size + (spec.train_size or 0)
    needed = wanted if spec.train_size is not None else wanted + 1
    if available < needed:
        raise CurationError(
            f"only {available} items are left after curation, but the splits ask for "
            f"train {spec.train_size if spec.train_size is not None else 'the rest'}, "
            f"validation {spec.val_size}, test {spec.test_size}: lower data.train_size, "
            f"data.val_size or data.test_size, or add categories"
        )


def _write_splits(staging: Path, assignment: np.ndarray, out: Path, schema: pa.Schema) -> None:
    writers = {
        index: pq.ParquetWriter(split_file(out, name), schema)
        for index, name in enumerate(SPLITS)
        if (assignment == index).any()
    }
    try:
        offset = 0
        # No pre-buffering and no reader threads: otherwise pyarrow reads ahead through the whole
        # file and the peak memory grows with the category (measured: 450 MiB against 210 MiB
        # reading 300k rows).
        staged = pq.ParquetFile(staging, pre_buffer=False)
        for batch in staged.iter_batches(batch_size=10_000, use_threads=False):
            table = pa.Table.from_batches([batch], schema=schema)
            part = assignment[offset : offset + len(table)]
            offset += len(table)
            for index, writer in writers.items():
                mask = part == index
                if mask.any():
                    writer.write_table(table.filter(pa.array(mask)))
    finally:
        for writer in writers.values():
            writer.close()
