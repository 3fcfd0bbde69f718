import math

import pytest

from pricer.read.metrics import price_metrics


def test_metrics_against_hand_computed_values():
    truth = [100.0, 50.0, 10.0, 200.0]
    predicted = [90.0, 95.0, 10.0, 150.0]
    m = price_metrics(truth, predicted)
    errors = [10.0, 45.0, 0.0, 50.0]
    assert m["n"] == 4
    assert m["mae"] == pytest.approx(26.25)
    assert m["median_ae"] == pytest.approx(27.5)
    # green: 10 < 40 yes; 45 >= 40 and 45 >= 0.2*50 no; 0 yes; 50 >= 40 and 50 >= 40 (20% of 200) no
    assert m["hit_rate"] == pytest.approx(0.5)
    logs = [math.log1p(p) - math.log1p(t) for p, t in zip(predicted, truth, strict=True)]
    assert m["rmsle"] == pytest.approx(math.sqrt(sum(x * x for x in logs) / 4))
    smape = [2 * e / (abs(p) + abs(t)) for e, p, t in zip(errors, predicted, truth, strict=True)]
    assert m["smape"] == pytest.approx(100 * sum(smape) / 4)
    low, high = m["mae_ci95"]
    assert min(errors) <= low < 26.25 < high <= max(errors)


def test_the_mae_interval_never_goes_below_zero():
    """Skewed errors on a small split: the normal approximation gave "$-6.70-73.70"."""
    from pricer.read.metrics import mean_interval

    truth = [10.0] * 9 + [500.0]
    predicted = [10.0] * 9 + [10.0]  # one big miss, nine exact prices
    m = price_metrics(truth, predicted)
    assert m["mae"] == pytest.approx(49.0)
    assert 0 <= m["mae_ci95"][0] <= 49.0 <= m["mae_ci95"][1] <= 490.0
    assert mean_interval([3.0, 3.0, 3.0]) == [3.0, 3.0]
    assert mean_interval([1.0, 2.0, 3.0, 4.0]) == mean_interval([1.0, 2.0, 3.0, 4.0])  # seeded


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="equal, non-empty"):
        price_metrics([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="equal, non-empty"):
        price_metrics([], [])


def test_the_mae_gap_interval_is_paired():
    """Two models that differ by $1 on every item: their MAE intervals overlap, but the paired
    gap is exactly -1 with no spread; a coin-flip gap has an interval around zero."""
    import numpy as np

    from pricer.read.metrics import mae_gap, price_metrics

    rng = np.random.default_rng(1)
    truth = rng.uniform(10, 500, 300)
    noise = rng.normal(0, 60, 300)
    worse = truth + np.abs(noise) + 1
    better = truth + np.abs(noise)
    a, b = price_metrics(truth, better), price_metrics(truth, worse)
    assert a["mae_ci95"][1] > b["mae_ci95"][0]  # the unpaired intervals overlap
    gap = mae_gap(truth, better, worse)
    assert gap["mae_gap"] == pytest.approx(-1) and gap["mae_gap_ci95"] == pytest.approx([-1, -1])
    flip = mae_gap(truth, truth + noise, truth - noise[::-1])
    assert flip["mae_gap_ci95"][0] < 0 < flip["mae_gap_ci95"][1]


def test_the_scatter_has_log_axes_and_a_legend_for_its_colours(tmp_path):
    import numpy as np

    from pricer.read.metrics import price_metrics
    from pricer.read.report import scatter

    truth = np.array([2.0, 50.0, 400.0, 900.0])
    predicted = np.array([2.5, 120.0, 150.0, 880.0])
    shown = scatter(truth, predicted, price_metrics(truth, predicted), tmp_path / "scatter.png")
    assert shown["scales"] == ("log", "log")
    assert shown["legend"] == [
        "within $40 or 20% (2)",
        "within $80 or 40% (1)",
        "further off (1)",
        "predicted = true",
    ]
    assert (tmp_path / "scatter.png").read_bytes()[:4] == b"\x89PNG"


def test_two_reads_agree_within_50_cents_or_1_percent_of_the_larger_either_way_round():
    import numpy as np

    from pricer.read.metrics import prices_agree

    a = np.array([10.0, 10.0, 100.0, 100.0, 200.0, 0.0])
    b = np.array([10.5, 10.51, 101.0, 101.02, 197.99, 0.5])
    assert prices_agree(a, b).tolist() == [True, False, True, False, False, True]
    assert prices_agree(b, a).tolist() == prices_agree(a, b).tolist()  # one definition, symmetric
