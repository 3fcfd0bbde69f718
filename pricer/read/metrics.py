"""How good the prices are: the course's measures and a few more, from two arrays."""

from __future__ import annotations

import numpy as np

from pricer.read.baselines import BASELINE_NAMES

# The course's "green": off by less than $40, or by less than 20% of the price.
HIT_DOLLARS = 40.0
HIT_RATIO = 0.2


# Two reads of the same item's price agree when within $0.50, or 1% of the larger of the two.
AGREE_DOLLARS = 0.5
AGREE_RATIO = 0.01


def prices_agree(a, b) -> np.ndarray:
    """Item by item, whether two reads of the same items' prices agree: the one definition of
    "within $0.50 or 1%" every comparison pricer reports uses (symmetric in a and b)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    gap = np.abs(a - b)
    return (gap <= AGREE_DOLLARS) | (gap <= AGREE_RATIO * np.maximum(np.abs(a), np.abs(b)))


def coverage_below_nominal(measured: float, nominal: float, n: int) -> str | None:
    """A sentence when an interval held fewer prices than it claims beyond the binomial noise
    of `n` items (scipy's one-sided exact test at 5%); None when it did not."""
    from scipy.stats import binomtest

    held = round(measured * n)
    if n == 0 or held >= nominal * n:
        return None
    p = binomtest(held, n, nominal, alternative="less").pvalue
    if p >= 0.05:
        return None
    return (
        f"the {nominal:.0%} interval held {measured:.1%} of the {n} prices, below its nominal "
        f"beyond the noise (one-sided binomial p={p:.2g}): it is too narrow on this data"
    )


def hits(truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    error = np.abs(predicted - truth)
    return (error < HIT_DOLLARS) | (error < HIT_RATIO * truth)


def mean_interval(values, samples: int = 10_000, seed: int = 0) -> list[float]:
    """The 95% percentile-bootstrap interval of a mean (scipy's `bootstrap`). Every pricer
    interval of an MAE, or of an MAE difference, comes from here. A percentile interval stays
    within the values' range: an MAE's never goes below $0, where the normal approximation's
    did on small or skewed test splits ("$-6.70-73.70")."""
    from scipy.stats import bootstrap

    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2 or np.all(values == values[0]):
        return [float(values.mean()), float(values.mean())]
    result = bootstrap(
        (values,),
        np.mean,
        n_resamples=samples,
        confidence_level=0.95,
        method="percentile",
        vectorized=True,
        batch=1000,
        rng=np.random.default_rng(seed),
    )
    interval = result.confidence_interval
    return [float(interval.low), float(interval.high)]


def price_metrics(truth, predicted) -> dict:
    """n, mae, rmsle, hit_rate, smape (%), median_ae and a 95% interval for the MAE (the
    percentile bootstrap of `mean_interval`: never below zero)."""
    truth = np.asarray(truth, dtype=np.float64)
    predicted = np.asarray(predicted, dtype=np.float64)
    if truth.shape != predicted.shape or truth.ndim != 1 or len(truth) == 0:
        raise ValueError(f"need two equal, non-empty 1-D arrays, got {truth.shape} and {predicted.shape}")
    from sklearn.metrics import mean_absolute_error, median_absolute_error, root_mean_squared_log_error

    error = np.abs(predicted - truth)
    denominator = np.abs(truth) + np.abs(predicted)
    smape = np.where(denominator > 0, 2 * error / np.where(denominator > 0, denominator, 1), 0.0)
    return {
        "n": len(truth),
        "mae": float(mean_absolute_error(truth, predicted)),
        # a price read below zero counts as $0 (the log needs it)
        "rmsle": float(root_mean_squared_log_error(truth, np.maximum(predicted, 0))),
        "hit_rate": float(hits(truth, predicted).mean()),
        "smape": float(100 * smape.mean()),
        "median_ae": float(median_absolute_error(truth, predicted)),
        "mae_ci95": mean_interval(error),
    }


def mae_gap(truth, model, baseline, samples: int = 10_000, seed: int = 0) -> dict:
    """The model's MAE minus a baseline's on the same items, with a paired bootstrap 95% interval.

    Pairing matters: the two MAEs' own intervals overlap widely on a few hundred items because
    both move with the same hard items; the gap's interval says whether the model is better.
    """
    truth = np.asarray(truth, dtype=np.float64)
    gaps = np.abs(np.asarray(model, dtype=np.float64) - truth) - np.abs(
        np.asarray(baseline, dtype=np.float64) - truth
    )
    return {"mae_gap": float(gaps.mean()), "mae_gap_ci95": mean_interval(gaps, samples, seed)}


def gap_text(metrics: dict) -> str:
    """`mae_gap` with its paired interval, as the tables show it ("" when there is none)."""
    if "mae_gap" not in metrics:
        return ""
    low, high = metrics["mae_gap_ci95"]
    return f"${metrics['mae_gap']:+.2f} (${low:+.2f} to ${high:+.2f})"


def metrics_table(metrics: dict, name: str = "fine-tuned") -> str:
    """The model's metrics beside its baselines, as a Markdown table (printed and in cards);
    the last column is the model's MAE minus each baseline's, with its paired 95% interval."""
    rows = [
        "| model | MAE | 95% CI of the MAE | RMSLE | hits | model minus this MAE (95% CI) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    baselines = metrics.get("baselines", {})
    named = {name: metrics, **{k: v for k, v in baselines.items() if isinstance(v, dict)}}
    for label, m in named.items():
        low, high = m["mae_ci95"]
        rows.append(
            f"| {BASELINE_NAMES.get(label, label)} | ${m['mae']:.2f} | ${low:.2f} to ${high:.2f} | "
            f"{m['rmsle']:.3f} | {100 * m['hit_rate']:.1f}% | {gap_text(m)} |"
        )
    return "\n".join(rows)
