"""Deterministic splits and the course's balanced sampling, on arrays (flat in memory)."""

from __future__ import annotations

import hashlib

import numpy as np

SPLITS = ("train", "validation", "test")
UNASSIGNED = -1


def key_hash(seed: int, key: str) -> int:
    """A product's place in the shuffle: a hash of seed and key, so it does not depend on the
    order records were read in, and no product can land in two splits."""
    return int.from_bytes(hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest(), "little")


def balanced_sample(
    prices: np.ndarray,
    categories: np.ndarray,
    category_weights: np.ndarray,
    cap: int,
    below: float,
    seed: int,
) -> np.ndarray:
    """The course's full-data rule: cap each whole-dollar bucket below `below` at `cap` items.

    Cheap items vastly outnumber dear ones; capping their buckets keeps the model from learning
    to guess low. Within a full bucket items are drawn without replacement, weighted by their
    category's weight (the course weighted Automotive 1 and the others 5). Returns a keep mask.
    """
    rng = np.random.default_rng(seed)
    keep = np.ones(len(prices), dtype=bool)
    buckets = np.round(prices).astype(np.int64)
    for bucket in np.unique(buckets[buckets < below]):
        members = np.flatnonzero(buckets == bucket)
        if len(members) <= cap:
            continue
        weights = category_weights[categories[members]].astype(np.float64)
        chosen = rng.choice(len(members), size=cap, replace=False, p=weights / weights.sum())
        drop = np.ones(len(members), dtype=bool)
        drop[chosen] = False
        keep[members[drop]] = False
    return keep


def assign_splits(hashes: np.ndarray, eligible: np.ndarray, sizes: dict[str, int | None]) -> np.ndarray:
    """Each eligible row's split index into SPLITS, or UNASSIGNED.

    Rows are taken in hash order: test first, then validation, then train (None: all the rest),
    so changing the train size never changes the test split.
    """
    assignment = np.full(len(hashes), UNASSIGNED, dtype=np.int8)
    order = np.flatnonzero(eligible)
    order = order[np.argsort(hashes[order], kind="stable")]
    start = 0
    for name in ("test", "validation", "train"):
        size = sizes[name]
        end = len(order) if size is None else start + size
        assignment[order[start:end]] = SPLITS.index(name)
        start = end
    return assignment
