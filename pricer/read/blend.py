"""The blend of the LLM's price with its price head's (`price_head.PriceHead`) and the classical
model's (`tfidf.TfidfPrice`), chosen on validation.

`fit` chooses on the validation split how much of the price head to mix into the LLM's price,
then the neighbours' share of the partner and how much of the partner to blend in: weighted
means in log price, the LLM's interval shifted with its point. When the 80% interval's coverage on validation misses by more than 5 points,
its widths in log price are scaled until it holds. Weight 1 and scale 1 read the LLM alone,
unchanged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np

from pricer.read.tfidf import BlendError, partner_prices

WEIGHTS = np.round(np.linspace(0.0, 1.0, 21), 2)  # the LLM's weights tried on validation
SHARES = WEIGHTS  # the neighbours' shares of the partner tried on validation
SCALES = np.round(np.arange(0.5, 3.001, 0.05), 2)  # interval scales tried when it misses
COVERAGE_TOLERANCE = 0.05


@dataclass(frozen=True)
class Blend:
    """How the LLM's read-out is combined with the classical partner's price.

    weight: the LLM's share of the point in log price (1: the LLM alone).
    interval_scale: the interval's distances from the point in log price, times this.
    knn_share: the nearest training items' share of the partner in log price, the rest the
        TF-IDF ridge's (0: the ridge alone).
    head_weight: the price head's share of the LLM's point in log price, mixed in before the
        partner (0: no head).
    """

    weight: float = 1.0
    interval_scale: float = 1.0
    knn_share: float = 0.0
    head_weight: float = 0.0

    @property
    def uses_tfidf(self) -> bool:
        return self.weight < 1.0

    @property
    def uses_knn(self) -> bool:
        return self.uses_tfidf and self.knn_share > 0

    @property
    def uses_head(self) -> bool:
        return self.head_weight > 0

    @property
    def changes_anything(self) -> bool:
        return self.weight != 1.0 or self.interval_scale != 1.0 or self.uses_head

    def apply(self, point, low, high, tfidf=None, head=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(point, low, high) blended; arrays, or one item's floats. `tfidf`, the partner's
        prices (`TfidfPrice.predict(texts, blend.knn_share)`), is needed only when the weight
        is under 1; `head`, the price head's, only when its weight is over 0."""
        point, low, high = (np.asarray(v, dtype=np.float64) for v in (point, low, high))
        if not self.changes_anything:
            return point, low, high
        return tuple(self.move(prices, point, tfidf, head) for prices in (point, low, high))

    def move(self, prices, point, tfidf=None, head=None) -> np.ndarray:
        """Prices of the LLM's distribution where the blend puts them: shifted in log price
        with the point toward the partner's price, their distance from the point scaled. A
        monotone map, so the moved distribution's quantiles are the moved quantiles."""
        prices = np.asarray(prices, dtype=np.float64)
        if not self.changes_anything:
            return prices
        llm = np.log1p(np.asarray(point, dtype=np.float64))
        mixed = llm
        if self.uses_head:
            if head is None:
                raise BlendError("the blend needs the price head's prices")
            mixed = (1 - self.head_weight) * llm + self.head_weight * np.log1p(
                np.asarray(head, dtype=np.float64)
            )
        if self.uses_tfidf:
            if tfidf is None:
                raise BlendError("the blend needs the TF-IDF model's (the partner's) prices")
            mixed = self.weight * mixed + (1 - self.weight) * np.log1p(np.asarray(tfidf, dtype=np.float64))
        return np.maximum(np.expm1(mixed + self.interval_scale * (np.log1p(prices) - llm)), 0.0)

    def as_dict(self) -> dict:
        return asdict(self)


def coverage(truth, low, high) -> float:
    truth = np.asarray(truth, dtype=np.float64)
    return float(((np.asarray(low) <= truth) & (truth <= np.asarray(high))).mean())


def choose_blend(
    truth,
    point,
    low,
    high,
    tfidf,
    nominal: float,
    blend: bool = True,
    calibrate: bool = True,
    knn=None,
    head=None,
) -> tuple[Blend, dict]:
    """The blend with the lowest validation MAE: first, when `head` (the price head's prices) is
    given, its weight in the LLM's price; then the LLM's weight and, when `knn` (the nearest
    training items' prices) are given, their share of the partner (ties go to the LLM, then to the
    ridge). Then, when the interval's coverage misses `nominal` by more than 5 points, the
    scale whose coverage is nearest to it (ties: the narrowest). Returns the blend and what
    validation measured."""
    truth = np.asarray(truth, dtype=np.float64)
    llm_mae = float(np.abs(np.asarray(point, dtype=np.float64) - truth).mean())
    head_weight, head_maes = 0.0, {}
    if head is not None:
        for w in WEIGHTS:
            mixed, _, _ = Blend(head_weight=float(w)).apply(point, low, high, head=head)
            head_maes[float(w)] = float(np.abs(mixed - truth).mean())
        head_weight = min(head_maes, key=lambda w: (head_maes[w], w))  # ties: less of the head
        # the rest is chosen on the LLM's price with the head mixed in, as `Blend.move` reads it
        point, low, high = Blend(head_weight=head_weight).apply(point, low, high, head=head)
    tfidf = None if tfidf is None else np.asarray(tfidf, dtype=np.float64)
    knn = None if knn is None or tfidf is None else np.asarray(knn, dtype=np.float64)
    blend = blend and tfidf is not None
    maes: dict[tuple[float, float], float] = {}
    for share in SHARES if knn is not None else [0.0]:
        partner = partner_prices(tfidf, knn, float(share)) if blend else None
        for weight in WEIGHTS if blend else [1.0]:
            if weight == 1.0 and share > 0:
                continue  # the LLM alone: the partner does not matter
            predicted, _, _ = Blend(float(weight), 1.0, float(share)).apply(point, low, high, partner)
            maes[(float(weight), float(share))] = float(np.abs(predicted - truth).mean())
    order = {key: (mae, -key[0], key[1]) for key, mae in maes.items()}
    weight, share = min(order, key=order.get)
    # the best blend that uses the partner, reported even when the LLM alone wins
    mixes = {key: order[key] for key in maes if key[0] < 1.0}
    best_mix = min(mixes, key=mixes.get) if mixes else (None, None)
    chosen = Blend(weight, 1.0, share)
    partner = partner_prices(tfidf, knn, share) if chosen.uses_tfidf else None
    _, lo, hi = chosen.apply(point, low, high, partner)
    before = coverage(truth, lo, hi)
    scale = 1.0
    if calibrate and abs(before - nominal) > COVERAGE_TOLERANCE:
        reached = {}
        for s in SCALES:
            _, lo, hi = Blend(weight, float(s), share).apply(point, low, high, partner)
            reached[float(s)] = coverage(truth, lo, hi)
        scale = min(reached, key=lambda s: (abs(reached[s] - nominal), s))
        chosen = Blend(weight, scale, share)
    _, lo, hi = chosen.apply(point, low, high, partner)
    report = {
        "n": int(len(truth)),
        "llm_mae": llm_mae,
        "head_mae": None if head is None else head_maes[1.0],
        "head_weight": head_weight,
        "head_mix_mae": None if head is None else head_maes[head_weight],
        "tfidf_mae": None if tfidf is None else float(np.abs(tfidf - truth).mean()),
        "knn_mae": None if knn is None else float(np.abs(knn - truth).mean()),
        "blend_mae": maes[(weight, share)],
        "weight": weight,
        "knn_share": share,
        "best_mix_weight": best_mix[0],
        "best_mix_knn_share": best_mix[1],
        "best_mix_mae": maes.get(best_mix),
        "interval_scale": scale,
        "coverage_before": before,
        "coverage_after": coverage(truth, lo, hi),
    }
    return replace(chosen, head_weight=head_weight), report


def mix_text(weight: float, knn_share: float | None, head_weight: float = 0.0) -> str:
    """A blend's weights in words: "0.6 LLM", "0.6 LLM, the partner 0.4 neighbours", or with a
    price head "0.6 LLM (0.3 its price head)"."""
    head = f" ({head_weight:g} its price head)" if head_weight else ""
    return f"{weight:g} LLM{head}" + (f", the partner {knn_share:g} neighbours" if knn_share else "")


def blend_summary(report: dict, nominal: float) -> str:
    """What fit chose on validation, in two lines."""
    llm, mix = report["llm_mae"], report["best_mix_mae"]
    if report["tfidf_mae"] is None:
        first = f"fit: validation MAE ${llm:.2f} for the LLM; no TF-IDF blend (model.blend.enabled false or no train split)"
    else:
        chosen = (
            f"the blend chosen: {mix_text(report['weight'], report.get('knn_share'))} in log price"
            if report["weight"] < 1
            else "the LLM alone chosen"
        )
        near = report.get("knn_mae")
        first = (
            f"fit: validation MAE ${llm:.2f} for the LLM, ${report['tfidf_mae']:.2f} for TF-IDF, "
            + (f"${near:.2f} for the nearest neighbours, " if near is not None else "")
            + f"${mix:.2f} blended at {mix_text(report['best_mix_weight'], report.get('best_mix_knn_share'))}: "
            f"{chosen} (n={report['n']})"
        )
    if report.get("head_mae") is not None:
        first += (
            f"\n     the price head ${report['head_mae']:.2f} alone; mixed into the LLM's price at "
            f"{report['head_weight']:g} in log price: ${report['head_mix_mae']:.2f}"
        )
    scale = report["interval_scale"]
    second = f"     the {nominal:.0%} interval held {report['coverage_before']:.1%} of validation prices"
    if scale != 1.0:
        second += f"; widths scaled by {scale:g} in log price: {report['coverage_after']:.1%}"
    return f"{first}\n{second}"
