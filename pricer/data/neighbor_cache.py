"""The prompts' neighbours of a split, retrieved once and cached beside the curated splits.

A split's neighbours depend on the index (the training items' TF-IDF rows and dedup keys), the
split's texts and k, and on nothing else: the cache key hashes exactly these, so a changed train
split, another k or other texts retrieve again, and the same ones read the rows back. Each entry
is one Parquet file (a list of training rows an item) with what retrieval left out, for the
neighbours' accounting.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pricer.data.features import VECTORIZER
from pricer.data.neighbors import Found, Retriever

VERSION = 2  # bump when retrieval's rule changes, so old entries are not reused


def index_fingerprint(index: Retriever) -> str:
    """The index's identity: its TF-IDF rows as stored, and its items' dedup keys."""
    digest = hashlib.sha256(json.dumps([VERSION, VECTORIZER]).encode())
    rows = index.rows.tocsr()
    for part in (rows.indptr, rows.indices, rows.data):
        digest.update(np.ascontiguousarray(part).tobytes())
    digest.update("\0".join(key or "" for key in index.keys).encode())
    return digest.hexdigest()


def entry_key(index: Retriever, texts: list[str], k: int, min_similarity: float = 0.0) -> str:
    fingerprint = getattr(index, "_cache_fingerprint", None)
    if fingerprint is None:  # hashed once an index: train, validation and test all ask
        fingerprint = index._cache_fingerprint = index_fingerprint(index)
    minimum = f"{min_similarity!r}:" if min_similarity else ""  # the default keeps its keys
    digest = hashlib.sha256(f"{fingerprint}:{k}:{minimum}{len(texts)}:".encode())
    digest.update("\0".join(texts).encode())
    return digest.hexdigest()[:24]


@dataclass
class Retrieved:
    """A split's neighbours: the rows, what was left out, and whether they came from the cache."""

    found: Found
    cached: bool
    path: Path | None = None


def retrieve(
    index: Retriever, texts: list[str], k: int, folder: Path | None, min_similarity: float = 0.0
) -> Retrieved:
    """`index.find(texts, k, min_similarity)`, read from `folder` when an earlier call saved it,
    else retrieved and saved there (no `folder`: retrieved, not cached)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if folder is None:
        return Retrieved(index.find(texts, k, min_similarity), cached=False)
    path = Path(folder) / f"{entry_key(index, texts, k, min_similarity)}.parquet"
    if path.is_file():
        try:
            table = pq.read_table(path)
            left_out = int(json.loads(table.schema.metadata[b"pricer"])["left_out"])
            rows = table.column("rows").to_pylist()
            if len(rows) == len(texts):
                return Retrieved(Found(rows, left_out), cached=True, path=path)
        except (OSError, KeyError, ValueError, pa.ArrowException):
            pass  # a damaged entry is retrieved again and replaced
    found = index.find(texts, k, min_similarity)
    table = pa.table({"rows": pa.array(found.rows, pa.list_(pa.int32()))})
    table = table.replace_schema_metadata({"pricer": json.dumps({"k": k, "left_out": found.left_out})})
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    pq.write_table(table, partial)
    os.replace(partial, path)  # a reader never sees half an entry
    return Retrieved(found, cached=False, path=path)
