"""The TF-IDF model saved beside an adapter, and the blend of its price with the LLM's.

The TF-IDF model is the baseline row's fit (word 1-2-grams, sublinear tf, a ridge on log price,
trained on the train split). `fit` chooses on the validation split how much of it to blend
into the LLM's price: a weighted mean in log price, the LLM's interval shifted with its point.
When the 80% interval's coverage on validation misses by more than 5 points, its widths in log
price are scaled until it holds. Weight 1 and scale 1 read the LLM alone, unchanged.

Saved without pickle: `tfidf.json` (settings and the vocabulary in column order) and
`tfidf.safetensors` (idf, coefficients, intercept), read back into the same scikit-learn
vectorizer, so a Space quotes what `test` measured.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

TFIDF_JSON = "tfidf.json"
TFIDF_WEIGHTS = "tfidf.safetensors"
FORMAT = "pricer-tfidf"
VERSION = 1
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
WEIGHTS = np.round(np.linspace(0.0, 1.0, 21), 2)  # the LLM's weights tried on validation
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
    """TF-IDF features and a ridge on log1p(price): the TF-IDF baseline, and the blend's partner."""

    def __init__(self, vectorizer, coef: np.ndarray, intercept: float) -> None:
        self.vectorizer, self.coef, self.intercept = (
            vectorizer,
            np.asarray(coef, np.float64),
            float(intercept),
        )

    @classmethod
    def fit(cls, texts: list[str], prices) -> TfidfPrice:
        from sklearn.linear_model import Ridge

        vectorizer = _vectorizer(VECTORIZER)
        features = vectorizer.fit_transform(list(texts))
        ridge = Ridge(alpha=RIDGE_ALPHA).fit(features, np.log1p(np.asarray(prices, dtype=np.float64)))
        return cls(vectorizer, ridge.coef_, float(ridge.intercept_))

    def log_price(self, texts: list[str]) -> np.ndarray:
        """log1p of the predicted price, as the ridge predicts it."""
        return np.asarray(self.vectorizer.transform(list(texts)) @ self.coef + self.intercept).ravel()

    def predict(self, texts: list[str]) -> np.ndarray:
        return np.clip(np.expm1(self.log_price(texts)), 0.0, None)

    def save(self, folder: Path) -> None:
        from safetensors.numpy import save_file

        terms = [""] * len(self.vectorizer.vocabulary_)
        for term, column in self.vectorizer.vocabulary_.items():
            terms[column] = term
        header = {"format": FORMAT, "version": VERSION, "vectorizer": VECTORIZER, "vocabulary": terms}
        (Path(folder) / TFIDF_JSON).write_text(
            json.dumps(header, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        save_file(
            {
                "idf": self.vectorizer.idf_.astype(np.float64),
                "coef": self.coef,
                "intercept": np.array([self.intercept], dtype=np.float64),
            },
            str(Path(folder) / TFIDF_WEIGHTS),
        )

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
        if not isinstance(header, dict) or header.get("format") != FORMAT or header.get("version") != VERSION:
            raise BlendError(f'{path}: not a version {VERSION} pricer TF-IDF model ("format": "{FORMAT}")')
        terms = header.get("vocabulary")
        if (
            not isinstance(terms, list)
            or not all(isinstance(t, str) for t in terms)
            or len(set(terms)) != len(terms)
        ):
            raise BlendError(f"{path}: vocabulary must be a list of distinct terms")
        if set(arrays) != {"idf", "coef", "intercept"}:
            raise BlendError(f"{weights}: expected idf, coef and intercept, found {sorted(arrays)}")
        if not (arrays["idf"].shape == arrays["coef"].shape == (len(terms),)) or arrays[
            "intercept"
        ].shape != (1,):
            raise BlendError(
                f"{weights}: idf {arrays['idf'].shape} and coef {arrays['coef'].shape} must both have "
                f"the vocabulary's {len(terms)} entries, intercept one"
            )
        settings = header.get("vectorizer")
        if not isinstance(settings, dict) or set(settings) != set(VECTORIZER):
            raise BlendError(f"{path}: vectorizer settings must be {sorted(VECTORIZER)}")
        vectorizer = _vectorizer(settings, {t: i for i, t in enumerate(terms)})
        vectorizer.idf_ = arrays["idf"]
        return cls(vectorizer, arrays["coef"], float(arrays["intercept"][0]))


@dataclass(frozen=True)
class Blend:
    """How the LLM's read-out is combined with the TF-IDF price.

    weight: the LLM's share of the point in log price (1: the LLM alone).
    interval_scale: the interval's distances from the point in log price, times this.
    """

    weight: float = 1.0
    interval_scale: float = 1.0

    @property
    def uses_tfidf(self) -> bool:
        return self.weight < 1.0

    @property
    def changes_anything(self) -> bool:
        return self.weight != 1.0 or self.interval_scale != 1.0

    def apply(self, point, low, high, tfidf=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(point, low, high) blended; arrays, or one item's floats. `tfidf` (its prices) is
        needed only when the weight is under 1."""
        point, low, high = (np.asarray(v, dtype=np.float64) for v in (point, low, high))
        if not self.changes_anything:
            return point, low, high
        return tuple(self.move(prices, point, tfidf) for prices in (point, low, high))

    def move(self, prices, point, tfidf=None) -> np.ndarray:
        """Prices of the LLM's distribution where the blend puts them: shifted in log price
        with the point toward the TF-IDF price, their distance from the point scaled. A
        monotone map, so the moved distribution's quantiles are the moved quantiles."""
        prices = np.asarray(prices, dtype=np.float64)
        if not self.changes_anything:
            return prices
        llm = np.log1p(np.asarray(point, dtype=np.float64))
        mixed = llm
        if self.uses_tfidf:
            if tfidf is None:
                raise BlendError("the blend needs the TF-IDF model's prices")
            mixed = self.weight * llm + (1 - self.weight) * np.log1p(np.asarray(tfidf, dtype=np.float64))
        return np.maximum(np.expm1(mixed + self.interval_scale * (np.log1p(prices) - llm)), 0.0)

    def as_dict(self) -> dict:
        return asdict(self)


def coverage(truth, low, high) -> float:
    truth = np.asarray(truth, dtype=np.float64)
    return float(((np.asarray(low) <= truth) & (truth <= np.asarray(high))).mean())


def choose_blend(
    truth, point, low, high, tfidf, nominal: float, blend: bool = True, calibrate: bool = True
) -> tuple[Blend, dict]:
    """The blend weight with the lowest validation MAE (ties go to the LLM), then, when the
    interval's coverage misses `nominal` by more than 5 points, the scale whose coverage is
    nearest to it (ties: the narrowest). Returns the blend and what validation measured."""
    truth = np.asarray(truth, dtype=np.float64)
    tfidf = None if tfidf is None else np.asarray(tfidf, dtype=np.float64)
    blend = blend and tfidf is not None
    maes: dict[float, float] = {}
    for weight in WEIGHTS if blend else [1.0]:
        predicted, _, _ = Blend(float(weight)).apply(point, low, high, tfidf)
        maes[float(weight)] = float(np.abs(predicted - truth).mean())
    best = min(maes.values())
    weight = max(w for w, m in maes.items() if m == best)
    # the best blend that uses TF-IDF, reported even when the LLM alone wins
    mixes = {w: m for w, m in maes.items() if w < 1.0}
    best_mix = min(mixes, key=lambda w: (mixes[w], -w)) if mixes else None
    chosen = Blend(weight)
    _, lo, hi = chosen.apply(point, low, high, tfidf)
    before = coverage(truth, lo, hi)
    scale = 1.0
    if calibrate and abs(before - nominal) > COVERAGE_TOLERANCE:
        reached = {}
        for s in SCALES:
            _, lo, hi = Blend(weight, float(s)).apply(point, low, high, tfidf)
            reached[float(s)] = coverage(truth, lo, hi)
        scale = min(reached, key=lambda s: (abs(reached[s] - nominal), s))
        chosen = Blend(weight, scale)
    _, lo, hi = chosen.apply(point, low, high, tfidf)
    report = {
        "n": int(len(truth)),
        "llm_mae": maes.get(1.0, float(np.abs(np.asarray(point) - truth).mean())),
        "tfidf_mae": None if tfidf is None else float(np.abs(tfidf - truth).mean()),
        "blend_mae": maes[weight],
        "weight": weight,
        "best_mix_weight": best_mix,
        "best_mix_mae": mixes.get(best_mix),
        "interval_scale": scale,
        "coverage_before": before,
        "coverage_after": coverage(truth, lo, hi),
    }
    return chosen, report


def blend_summary(report: dict, nominal: float) -> str:
    """What fit chose on validation, in two lines."""
    llm, mix = report["llm_mae"], report["best_mix_mae"]
    if report["tfidf_mae"] is None:
        first = f"fit: validation MAE ${llm:.2f} for the LLM; no TF-IDF blend (model.blend false or no train split)"
    else:
        chosen = (
            f"the blend chosen: {report['weight']:g} LLM in log price"
            if report["weight"] < 1
            else "the LLM alone chosen"
        )
        first = (
            f"fit: validation MAE ${llm:.2f} for the LLM, ${report['tfidf_mae']:.2f} for TF-IDF, "
            f"${mix:.2f} blended at {report['best_mix_weight']:g} LLM: {chosen} (n={report['n']})"
        )
    scale = report["interval_scale"]
    second = f"     the {nominal:.0%} interval held {report['coverage_before']:.1%} of validation prices"
    if scale != 1.0:
        second += f"; widths scaled by {scale:g} in log price: {report['coverage_after']:.1%}"
    return f"{first}\n{second}"
