"""The classical model saved beside an adapter, and the blend of its price with the LLM's.

The classical model is the TF-IDF baseline row's fit (word 1-2-grams, sublinear tf, a ridge on
log price, trained on the train split) and, on the same features, the train items nearest to a
product (cosine similarity, the 5 nearest weighted by inverse distance, their mean log price:
the nearest-neighbours baseline row). The two make the blend's partner: their weighted mean in
log price. `fit` chooses on the validation split the neighbours' share of the partner and how
much of the partner to blend into the LLM's price: a weighted mean in log price, the LLM's
interval shifted with its point. When the 80% interval's coverage on validation misses by more
than 5 points, its widths in log price are scaled until it holds. Weight 1 and scale 1 read the
LLM alone, unchanged.

Saved without pickle: `tfidf.json` (settings and the vocabulary in column order) and
`tfidf.safetensors` (idf, coefficients, intercept, and the train items' features and log prices
for the neighbours), read back into the same scikit-learn vectorizer, so a Space quotes what
`test` measured.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

TFIDF_JSON = "tfidf.json"
TFIDF_WEIGHTS = "tfidf.safetensors"
FORMAT = "pricer-tfidf"
VERSION = 2  # 2: the train items' features and log prices, for the nearest neighbours
READABLE = (1, 2)  # version 1 (no neighbours) still reads, for a blend without them
# the baseline's vectorizer; what it leaves at scikit-learn's defaults is saved too, so a later
# scikit-learn with other defaults still reads the same features
VECTORIZER = {
    "ngram_range": [1, 2],
    "sublinear_tf": True,
    "min_df": 1,
    "max_features": 50_000,
    "lowercase": True,
    "token_pattern": r"(?u)\b\w\w+\b",
    "norm": "l2",
    "smooth_idf": True,
    "use_idf": True,
    "strip_accents": None,
}
RIDGE_ALPHA = 1.0
# The nearest neighbours: how many, weighted by 1 / cosine distance (scikit-learn's "distance").
# 5 was chosen on the validation split of the learning-rate lever runs (RESULTS.md): alone it
# beat 3, 8 and 10 there, and mixed with the ridge it was within $0.20 of the best.
NEIGHBORS = 5
NEIGHBOR_ARRAYS = ("rows_data", "rows_indices", "rows_indptr", "rows_log_price")
WEIGHTS = np.round(np.linspace(0.0, 1.0, 21), 2)  # the LLM's weights tried on validation
SHARES = WEIGHTS  # the neighbours' shares of the partner tried on validation
SCALES = np.round(np.arange(0.5, 3.001, 0.05), 2)  # interval scales tried when it misses
COVERAGE_TOLERANCE = 0.05


class BlendError(ValueError):
    """A saved TF-IDF model or blend that cannot be used; the message names the file and why."""


def _vectorizer(settings: dict, vocabulary: dict | None = None):
    from sklearn.feature_extraction.text import TfidfVectorizer

    kept = {k: v for k, v in settings.items() if k not in ("min_df", "max_features") or vocabulary is None}
    return TfidfVectorizer(
        **{**kept, "ngram_range": tuple(settings["ngram_range"]), "dtype": np.float64}, vocabulary=vocabulary
    )


class TfidfPrice:
    """TF-IDF features, a ridge on log1p(price) and the nearest train items: the TF-IDF and
    nearest-neighbours baselines, and the blend's partner."""

    def __init__(
        self, vectorizer, coef: np.ndarray, intercept: float, rows=None, rows_log_price=None
    ) -> None:
        self.vectorizer, self.coef, self.intercept = (
            vectorizer,
            np.asarray(coef, np.float64),
            float(intercept),
        )
        # the train items' TF-IDF rows (unit length) and log1p prices; None: saved without them
        self.rows = rows
        self.rows_log_price = None if rows_log_price is None else np.asarray(rows_log_price, np.float64)

    @classmethod
    def fit(cls, texts: list[str], prices) -> TfidfPrice:
        from sklearn.linear_model import Ridge

        vectorizer = _vectorizer(VECTORIZER)
        features = vectorizer.fit_transform(list(texts))
        log_prices = np.log1p(np.asarray(prices, dtype=np.float64))
        ridge = Ridge(alpha=RIDGE_ALPHA).fit(features, log_prices)
        return cls(vectorizer, ridge.coef_, float(ridge.intercept_), features.tocsr(), log_prices)

    @property
    def has_neighbors(self) -> bool:
        return self.rows is not None

    def log_price(self, texts: list[str]) -> np.ndarray:
        """log1p of the predicted price, as the ridge predicts it."""
        return np.asarray(self.vectorizer.transform(list(texts)) @ self.coef + self.intercept).ravel()

    def neighbors_log_price(self, texts: list[str], k: int = NEIGHBORS) -> np.ndarray:
        """log1p of the price as the nearest train items say it: the mean of the `k` nearest's
        log prices (cosine distance on the TF-IDF rows), weighted by 1 / distance; an
        item at distance 0 alone decides. A text with no known term is equally far from every
        train item: it gets their mean."""
        if not self.has_neighbors:
            raise BlendError(
                f"this TF-IDF model was saved without its train rows ({TFIDF_WEIGHTS} version 1): "
                "it has no nearest neighbours"
            )
        queries = self.vectorizer.transform(list(texts)).tocsr()
        k = min(k, self.rows.shape[0])
        # scikit-learn's own: brute force on the sparse rows, cosine distance, weighted by
        # 1 / distance (an item at distance 0 alone decides)
        found = self._neighbors(k).predict(queries)
        # a text with no known term is equally far from every train item: their mean, where
        # the k that scikit-learn's partition happens to pick would be arbitrary
        found[queries.getnnz(axis=1) == 0] = self.rows_log_price.mean()
        return np.asarray(found, dtype=np.float64)

    def _neighbors(self, k: int):
        from sklearn.neighbors import KNeighborsRegressor

        cached = getattr(self, "_fitted_neighbors", None)
        if cached is None or cached.n_neighbors != k:
            cached = KNeighborsRegressor(
                n_neighbors=k, weights="distance", metric="cosine", algorithm="brute"
            )
            cached.fit(self.rows, self.rows_log_price)
            self._fitted_neighbors = cached
        return cached

    def predict(self, texts: list[str], neighbors: float = 0.0) -> np.ndarray:
        """The partner's prices, the neighbours' share `neighbors` (0, the default: the ridge
        alone, the TF-IDF baseline row's prices; 1: the neighbours alone, their row's)."""
        if neighbors == 1:  # the ridge is not needed
            return np.expm1(self.neighbors_log_price(texts))
        ridge = np.clip(np.expm1(self.log_price(texts)), 0.0, None)
        if neighbors == 0:
            return ridge
        return partner_prices(ridge, np.expm1(self.neighbors_log_price(texts)), neighbors)

    def predict_neighbors(self, texts: list[str]) -> np.ndarray:
        """The nearest-neighbours baseline row's prices."""
        return self.predict(texts, 1.0)

    def save(self, folder: Path) -> None:
        from safetensors.numpy import save_file

        terms = [""] * len(self.vectorizer.vocabulary_)
        for term, column in self.vectorizer.vocabulary_.items():
            terms[column] = term
        header = {
            "format": FORMAT,
            "version": VERSION if self.has_neighbors else 1,
            "vectorizer": VECTORIZER,
            "vocabulary": terms,
        }
        if self.has_neighbors:
            header["neighbors"] = NEIGHBORS
        (Path(folder) / TFIDF_JSON).write_text(
            json.dumps(header, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        arrays = {
            "idf": self.vectorizer.idf_.astype(np.float64),
            "coef": self.coef,
            "intercept": np.array([self.intercept], dtype=np.float64),
        }
        if self.has_neighbors:
            arrays.update(
                rows_data=np.asarray(self.rows.data, np.float64),
                rows_indices=np.asarray(self.rows.indices, np.int32),
                rows_indptr=np.asarray(self.rows.indptr, np.int64),
                rows_log_price=self.rows_log_price,
            )
        save_file(arrays, str(Path(folder) / TFIDF_WEIGHTS))

    @classmethod
    def load(cls, folder: Path) -> TfidfPrice:
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        path, weights = Path(folder) / TFIDF_JSON, Path(folder) / TFIDF_WEIGHTS
        for needed in (path, weights):
            if not needed.is_file():
                raise BlendError(f"{needed} is missing: the recipe blends in a TF-IDF model saved there")
        try:
            header = json.loads(path.read_text(encoding="utf-8"))
            arrays = load_file(str(weights))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, SafetensorError) as error:
            raise BlendError(f"{path.parent}: the TF-IDF model cannot be read: {error}") from None
        if (
            not isinstance(header, dict)
            or header.get("format") != FORMAT
            or header.get("version") not in READABLE
        ):
            raise BlendError(
                f'{path}: not a version {" or ".join(map(str, READABLE))} pricer TF-IDF model ("format": "{FORMAT}")'
            )
        terms = header.get("vocabulary")
        if (
            not isinstance(terms, list)
            or not all(isinstance(t, str) for t in terms)
            or len(set(terms)) != len(terms)
        ):
            raise BlendError(f"{path}: vocabulary must be a list of distinct terms")
        expected = {"idf", "coef", "intercept"} | (set(NEIGHBOR_ARRAYS) if header["version"] >= 2 else set())
        if set(arrays) != expected:
            raise BlendError(f"{weights}: expected {', '.join(sorted(expected))}, found {sorted(arrays)}")
        if not (arrays["idf"].shape == arrays["coef"].shape == (len(terms),)) or arrays[
            "intercept"
        ].shape != (1,):
            raise BlendError(
                f"{weights}: idf {arrays['idf'].shape} and coef {arrays['coef'].shape} must both have "
                f"the vocabulary's {len(terms)} entries, intercept one"
            )
        if header["version"] >= 2 and header.get("neighbors") != NEIGHBORS:
            raise BlendError(f"{path}: neighbors must be {NEIGHBORS}, the count this pricer reads with")
        settings = header.get("vectorizer")
        if not isinstance(settings, dict) or set(settings) != set(VECTORIZER):
            raise BlendError(f"{path}: vectorizer settings must be {sorted(VECTORIZER)}")
        vectorizer = _vectorizer(settings, {t: i for i, t in enumerate(terms)})
        vectorizer.idf_ = arrays["idf"]
        rows = _rows(arrays, len(terms), weights) if header["version"] >= 2 else None
        return cls(
            vectorizer,
            arrays["coef"],
            float(arrays["intercept"][0]),
            rows,
            arrays["rows_log_price"] if rows is not None else None,
        )


def _rows(arrays: dict, terms: int, where: Path):
    """The train items' TF-IDF rows from their CSR arrays, checked before use."""
    from scipy.sparse import csr_matrix

    data, indices, indptr, prices = (arrays[k] for k in NEIGHBOR_ARRAYS)
    n = len(prices)
    fits = (
        data.ndim == indices.ndim == indptr.ndim == prices.ndim == 1
        and n > 0
        and len(indptr) == n + 1
        and indptr[0] == 0
        and indptr[-1] == len(data) == len(indices)
        and bool(np.all(np.diff(indptr) >= 0))
        and (len(indices) == 0 or (indices.min() >= 0 and indices.max() < terms))
        and bool(np.all(np.isfinite(prices)))
    )
    if not fits:
        raise BlendError(
            f"{where}: the train rows do not fit together (rows_indptr {indptr.shape}, rows_indices "
            f"{indices.shape}, rows_data {data.shape}, rows_log_price {prices.shape}, {terms} terms)"
        )
    return csr_matrix((data, indices, indptr), shape=(n, terms))


@dataclass(frozen=True)
class Blend:
    """How the LLM's read-out is combined with the classical partner's price.

    weight: the LLM's share of the point in log price (1: the LLM alone).
    interval_scale: the interval's distances from the point in log price, times this.
    neighbors: the nearest neighbours' share of the partner in log price, the rest the TF-IDF
        ridge's (0: the ridge alone, the blend before there were neighbours).
    """

    weight: float = 1.0
    interval_scale: float = 1.0
    neighbors: float = 0.0

    @property
    def uses_tfidf(self) -> bool:
        return self.weight < 1.0

    @property
    def uses_neighbors(self) -> bool:
        return self.uses_tfidf and self.neighbors > 0

    @property
    def changes_anything(self) -> bool:
        return self.weight != 1.0 or self.interval_scale != 1.0

    def apply(self, point, low, high, tfidf=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(point, low, high) blended; arrays, or one item's floats. `tfidf`, the partner's
        prices (`TfidfPrice.predict(texts, blend.neighbors)`), is needed only when the weight
        is under 1."""
        point, low, high = (np.asarray(v, dtype=np.float64) for v in (point, low, high))
        if not self.changes_anything:
            return point, low, high
        return tuple(self.move(prices, point, tfidf) for prices in (point, low, high))

    def move(self, prices, point, tfidf=None) -> np.ndarray:
        """Prices of the LLM's distribution where the blend puts them: shifted in log price
        with the point toward the partner's price, their distance from the point scaled. A
        monotone map, so the moved distribution's quantiles are the moved quantiles."""
        prices = np.asarray(prices, dtype=np.float64)
        if not self.changes_anything:
            return prices
        llm = np.log1p(np.asarray(point, dtype=np.float64))
        mixed = llm
        if self.uses_tfidf:
            if tfidf is None:
                raise BlendError("the blend needs the TF-IDF model's (the partner's) prices")
            mixed = self.weight * llm + (1 - self.weight) * np.log1p(np.asarray(tfidf, dtype=np.float64))
        return np.maximum(np.expm1(mixed + self.interval_scale * (np.log1p(prices) - llm)), 0.0)

    def as_dict(self) -> dict:
        return asdict(self)


def load_partner(folder: Path, blend: Blend) -> TfidfPrice:
    """The classical model a blend reads, from the adapter folder; raises BlendError when the
    blend needs the neighbours and the saved model has no train rows."""
    partner = TfidfPrice.load(folder)
    if blend.uses_neighbors and not partner.has_neighbors:
        raise BlendError(
            f"{Path(folder) / TFIDF_WEIGHTS}: the recipe gives the nearest neighbours {blend.neighbors:g} "
            "of the blend's partner, but the TF-IDF model was saved without its train rows"
        )
    return partner


def partner_prices(tfidf, neighbors, share: float) -> np.ndarray:
    """The blend's partner from the ridge's prices and the neighbours': their weighted mean in
    log price, `share` the neighbours' (0: the ridge's prices as they are, 1: the neighbours')."""
    if share == 0:
        return np.asarray(tfidf, dtype=np.float64)
    if neighbors is None:
        raise BlendError("the blend needs the nearest neighbours' prices")
    if share == 1:
        return np.asarray(neighbors, dtype=np.float64)
    mixed = (1 - share) * np.log1p(np.asarray(tfidf, np.float64)) + share * np.log1p(
        np.asarray(neighbors, np.float64)
    )
    return np.expm1(mixed)


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
    neighbors=None,
) -> tuple[Blend, dict]:
    """The blend with the lowest validation MAE: the LLM's weight and, when `neighbors` (their
    prices) are given, the neighbours' share of the partner (ties go to the LLM, then to the
    ridge). Then, when the interval's coverage misses `nominal` by more than 5 points, the
    scale whose coverage is nearest to it (ties: the narrowest). Returns the blend and what
    validation measured."""
    truth = np.asarray(truth, dtype=np.float64)
    tfidf = None if tfidf is None else np.asarray(tfidf, dtype=np.float64)
    neighbors = None if neighbors is None or tfidf is None else np.asarray(neighbors, dtype=np.float64)
    blend = blend and tfidf is not None
    maes: dict[tuple[float, float], float] = {}
    for share in SHARES if neighbors is not None else [0.0]:
        partner = partner_prices(tfidf, neighbors, float(share)) if blend else None
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
    partner = partner_prices(tfidf, neighbors, share) if chosen.uses_tfidf else None
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
        "llm_mae": maes.get((1.0, 0.0), float(np.abs(np.asarray(point) - truth).mean())),
        "tfidf_mae": None if tfidf is None else float(np.abs(tfidf - truth).mean()),
        "neighbors_mae": None if neighbors is None else float(np.abs(neighbors - truth).mean()),
        "blend_mae": maes[(weight, share)],
        "weight": weight,
        "neighbors": share,
        "best_mix_weight": best_mix[0],
        "best_mix_neighbors": best_mix[1],
        "best_mix_mae": maes.get(best_mix),
        "interval_scale": scale,
        "coverage_before": before,
        "coverage_after": coverage(truth, lo, hi),
    }
    return chosen, report


def mix_text(weight: float, neighbors: float | None) -> str:
    """A blend's weights in words: "0.6 LLM", or "0.6 LLM, the partner 0.4 neighbours"."""
    return f"{weight:g} LLM" + (f", the partner {neighbors:g} neighbours" if neighbors else "")


def blend_summary(report: dict, nominal: float) -> str:
    """What fit chose on validation, in two lines."""
    llm, mix = report["llm_mae"], report["best_mix_mae"]
    if report["tfidf_mae"] is None:
        first = f"fit: validation MAE ${llm:.2f} for the LLM; no TF-IDF blend (model.blend false or no train split)"
    else:
        chosen = (
            f"the blend chosen: {mix_text(report['weight'], report.get('neighbors'))} in log price"
            if report["weight"] < 1
            else "the LLM alone chosen"
        )
        near = report.get("neighbors_mae")
        first = (
            f"fit: validation MAE ${llm:.2f} for the LLM, ${report['tfidf_mae']:.2f} for TF-IDF, "
            + (f"${near:.2f} for the nearest neighbours, " if near is not None else "")
            + f"${mix:.2f} blended at {mix_text(report['best_mix_weight'], report.get('best_mix_neighbors'))}: "
            f"{chosen} (n={report['n']})"
        )
    scale = report["interval_scale"]
    second = f"     the {nominal:.0%} interval held {report['coverage_before']:.1%} of validation prices"
    if scale != 1.0:
        second += f"; widths scaled by {scale:g} in log price: {report['coverage_after']:.1%}"
    return f"{first}\n{second}"
