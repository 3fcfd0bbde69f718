import numpy as np

from pricer.data.splits import SPLITS, UNASSIGNED, assign_splits, balanced_sample


def test_balanced_sampling_caps_cheap_buckets_and_keeps_dear_ones():
    prices = np.array([5.2] * 50 + [4.9] * 3 + [300.0] * 40)
    categories = np.zeros(len(prices), dtype=np.int16)
    keep = balanced_sample(prices, categories, np.array([1.0]), cap=10, below=240, seed=1)
    assert keep[:53].sum() == 10  # bucket $5 (5.2 and 4.9 both round to 5) capped at 10
    assert keep[53:].all()  # $300 is above the cut: kept whole
    again = balanced_sample(prices, categories, np.array([1.0]), cap=10, below=240, seed=1)
    assert (keep == again).all()


def test_balanced_sampling_weights_categories():
    prices = np.full(2000, 10.0)
    categories = np.array([0] * 1000 + [1] * 1000, dtype=np.int16)
    keep = balanced_sample(prices, categories, np.array([1.0, 5.0]), cap=300, below=240, seed=0)
    light, heavy = keep[:1000].sum(), keep[1000:].sum()
    assert light + heavy == 300
    assert heavy > 3 * light  # weight 5 against 1


def test_assign_splits_takes_test_then_validation_then_the_rest():
    hashes = np.arange(20, dtype=np.uint64)[::-1].copy()
    eligible = np.ones(20, dtype=bool)
    eligible[0] = False
    assignment = assign_splits(hashes, eligible, {"train": None, "validation": 2, "test": 3})
    test = SPLITS.index("test")
    assert set(np.flatnonzero(assignment == test)) == {19, 18, 17}  # smallest hashes
    assert (assignment == SPLITS.index("train")).sum() == 14
    assert assignment[0] == UNASSIGNED
