"""The classical model the LLM is blended with, saved beside an adapter.

It is the TF-IDF baseline row's fit (word 1-2-grams, sublinear tf, a ridge on log price,
trained on the train split) and, on the same features, the train items nearest to a product
(cosine similarity, the 5 nearest weighted by inverse distance, their mean log price: the
nearest-neighbours baseline row). Their weighted mean in log price is the blend's partner.

Saved without pickle: `tfidf.json` (settings and the vocabulary in column order) and
`tfidf.safetensors` (idf, coefficients, intercept, and the train items' features and log prices
for the neighbours), read back into the same scikit-learn vectorizer, so a Space quotes what
`test` measured.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pricer.data.features import VECTORIZER, tfidf_vectorizer

TFIDF_JSON = "tfidf.json"
TFIDF_WEIGHTS = "tfidf.safetensors"
FORMAT = "pricer-tfidf"
VERSION = 3  # the ridge, and the train items' features and log prices for the nearest neighbours
RIDGE_ALPHA = 1.0
# The nearest neighbours: how many, weighted by 1 / cosine distance (scikit-learn's "distance").
# 5 was chosen on the validation split of the learning-rate lever runs (RESULTS.md): alone it
# beat 3, 8 and 10 there, and mixed with the ridge it was within $0.20 of the best.
KNN_K = 5
NEIGHBOR_ARRAYS = ("rows_data", "rows_indices", "rows_indptr", "rows_log_price")


class BlendError(ValueError):
    """A saved TF-IDF model or blend that cannot be used; the message names the file and why."""


class TfidfPrice:
    """TF-IDF features, a ridge on log1p(price) and the nearest train items: the TF-IDF and
    nearest-neighbours baselines, and the blend's partner."""

    def __init__(self, vectorizer, coef: np.ndarray, intercept: float, rows, rows_log_price) -> None:
        self.vectorizer, self.coef, self.intercept = (
            vectorizer,
            np.asarray(coef, np.float64),
            float(intercept),
        )
        # the train items' TF-IDF rows (unit length) and log1p prices
        self.rows = rows
        self.rows_log_price = np.asarray(rows_log_price, np.float64)

    @classmethod
    def fit(cls, texts: list[str], prices, features=None) -> TfidfPrice:
        """Fitted on these training items; `features`, their (vectorizer, rows) already fitted
        (the prompts' neighbour index, `data.neighbors.Retriever`): one index, not two."""
        from sklearn.linear_model import Ridge

        if features is None:
            vectorizer = tfidf_vectorizer(VECTORIZER)
            features = vectorizer.fit_transform(list(texts))
        else:
            vectorizer, features = features
        log_prices = np.log1p(np.asarray(prices, dtype=np.float64))
        ridge = Ridge(alpha=RIDGE_ALPHA).fit(features, log_prices)
        return cls(vectorizer, ridge.coef_, float(ridge.intercept_), features.tocsr(), log_prices)

    def log_price(self, texts: list[str]) -> np.ndarray:
        """log1p of the predicted price, as the ridge predicts it."""
        return np.asarray(self.vectorizer.transform(list(texts)) @ self.coef + self.intercept).ravel()

    def knn_log_price(self, texts: list[str], k: int = KNN_K) -> np.ndarray:
        """log1p of the price as the nearest train items say it: the mean of the `k` nearest's
        log prices (cosine distance on the TF-IDF rows), weighted by 1 / distance; an
        item at distance 0 alone decides. A text with no known term is equally far from every
        train item: it gets their mean."""
        queries = self.vectorizer.transform(list(texts)).tocsr()
        k = min(k, self.rows.shape[0])
        # scikit-learn's own: brute force on the sparse rows, cosine distance, weighted by
        # 1 / distance (an item at distance 0 alone decides)
        found = self._knn(k).predict(queries)
        # a text with no known term is equally far from every train item: their mean, where
        # the k that scikit-learn's partition happens to pick would be arbitrary
        found[queries.getnnz(axis=1) == 0] = self.rows_log_price.mean()
        return np.asarray(found, dtype=np.float64)

    def _knn(self, k: int):
        from sklearn.neighbors import KNeighborsRegressor

        cached = getattr(self, "_fitted_knn", None)
        if cached is None or cached.n_neighbors != k:
            cached = KNeighborsRegressor(
                n_neighbors=k, weights="distance", metric="cosine", algorithm="brute"
            )
            cached.fit(self.rows, self.rows_log_price)
            self._fitted_knn = cached
        return cached

    def predict(self, texts: list[str], knn_share: float = 0.0) -> np.ndarray:
        """The partner's prices, `knn_share` the nearest training items' (0, the default: the
        ridge alone, the TF-IDF baseline row's prices; 1: the nearest items alone, their row's)."""
        if knn_share == 1:  # the ridge is not needed
            return np.expm1(self.knn_log_price(texts))
        ridge = np.clip(np.expm1(self.log_price(texts)), 0.0, None)
        if knn_share == 0:
            return ridge
        return partner_prices(ridge, np.expm1(self.knn_log_price(texts)), knn_share)

    def predict_knn(self, texts: list[str]) -> np.ndarray:
        """The nearest-neighbours baseline row's prices."""
        return self.predict(texts, 1.0)

    def save(self, folder: Path) -> None:
        from safetensors.numpy import save_file

        terms = [""] * len(self.vectorizer.vocabulary_)
        for term, column in self.vectorizer.vocabulary_.items():
            terms[column] = term
        header = {
            "format": FORMAT,
            "version": VERSION,
            "vectorizer": VECTORIZER,
            "vocabulary": terms,
            "knn_k": KNN_K,
        }
        (Path(folder) / TFIDF_JSON).write_text(
            json.dumps(header, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        arrays = {
            "idf": self.vectorizer.idf_.astype(np.float64),
            "coef": self.coef,
            "intercept": np.array([self.intercept], dtype=np.float64),
            "rows_data": np.asarray(self.rows.data, np.float64),
            "rows_indices": np.asarray(self.rows.indices, np.int32),
            "rows_indptr": np.asarray(self.rows.indptr, np.int64),
            "rows_log_price": self.rows_log_price,
        }
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
        if not isinstance(header, dict) or header.get("format") != FORMAT or header.get("version") != VERSION:
            raise BlendError(f'{path}: not a version {VERSION} pricer TF-IDF model ("format": "{FORMAT}")')
        terms = header.get("vocabulary")
        if (
            not isinstance(terms, list)
            or not all(isinstance(t, str) for t in terms)
            or len(set(terms)) != len(terms)
        ):
            raise BlendError(f"{path}: vocabulary must be a list of distinct terms")
        expected = {"idf", "coef", "intercept", *NEIGHBOR_ARRAYS}
        if set(arrays) != expected:
            raise BlendError(f"{weights}: expected {', '.join(sorted(expected))}, found {sorted(arrays)}")
        if not (arrays["idf"].shape == arrays["coef"].shape == (len(terms),)) or arrays[
            "intercept"
        ].shape != (1,):
            raise BlendError(
                f"{weights}: idf {arrays['idf'].shape} and coef {arrays['coef'].shape} must both have "
                f"the vocabulary's {len(terms)} entries, intercept one"
            )
        if header.get("knn_k") != KNN_K:
            raise BlendError(f"{path}: knn_k must be {KNN_K}, the count this pricer reads with")
        settings = header.get("vectorizer")
        if not isinstance(settings, dict) or set(settings) != set(VECTORIZER):
            raise BlendError(f"{path}: vectorizer settings must be {sorted(VECTORIZER)}")
        vectorizer = tfidf_vectorizer(settings, {t: i for i, t in enumerate(terms)})
        vectorizer.idf_ = arrays["idf"]
        rows = _rows(arrays, len(terms), weights)
        return cls(vectorizer, arrays["coef"], float(arrays["intercept"][0]), rows, arrays["rows_log_price"])


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


def partner_prices(tfidf, knn, share: float) -> np.ndarray:
    """The blend's partner from the ridge's prices and the nearest training items': their
    weighted mean in log price, `share` the nearest items' (0: the ridge's prices as they are,
    1: the nearest items')."""
    if share == 0:
        return np.asarray(tfidf, dtype=np.float64)
    if knn is None:
        raise BlendError("the blend needs the nearest neighbours' prices")
    if share == 1:
        return np.asarray(knn, dtype=np.float64)
    mixed = (1 - share) * np.log1p(np.asarray(tfidf, np.float64)) + share * np.log1p(
        np.asarray(knn, np.float64)
    )
    return np.expm1(mixed)
