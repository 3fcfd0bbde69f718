"""Baselines on the same test split: what a fine-tuned model has to beat.

The training mean and median as constants, a TF-IDF linear model on log price, the nearest
train items on the same TF-IDF features and a random forest on bag-of-words features, all
trained on the train split (fair, cheap text models: if the LLM does not beat them, say so).
"""

from __future__ import annotations

import numpy as np

# How the baselines are named in tables, cards and the Space.
BASELINE_NAMES = {
    "train_mean": "training mean",
    "train_median": "training median",
    "tfidf_linear_log_price": "TF-IDF linear model",
    "tfidf_knn_log_price": "5 nearest neighbours on TF-IDF",
    "random_forest_bow_log_price": "random forest on bag-of-words",
    "prompt_neighbors_median": "the prompt's neighbours: their median price",
}


def baseline_predictions(train_prices, train_texts, test_texts, tfidf=None) -> dict[str, np.ndarray]:
    """Each baseline's prices for test_texts. The TF-IDF model (its ridge, and its nearest
    neighbours) is the one fit's blend uses; `tfidf`: that model already fitted on these train
    items, not fitted again."""
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.pipeline import make_pipeline

    from pricer.read.tfidf import TfidfPrice

    prices = np.asarray(train_prices, dtype=np.float64)
    n = len(test_texts)
    tfidf = tfidf or TfidfPrice.fit(list(train_texts), prices)
    forest = make_pipeline(
        CountVectorizer(binary=True, stop_words="english", max_features=2_000),
        RandomForestRegressor(n_estimators=100, max_features=0.3, n_jobs=-1, random_state=42),
    )
    forest.fit(list(train_texts), np.log1p(prices))
    forest[-1].n_jobs = 1  # summing the trees' predictions in threads reorders float additions
    forested = np.expm1(forest.predict(list(test_texts)))
    return {
        "train_mean": np.full(n, prices.mean()),
        "train_median": np.full(n, float(np.median(prices))),
        "tfidf_linear_log_price": tfidf.predict(list(test_texts)),
        "tfidf_knn_log_price": tfidf.predict_knn(list(test_texts)),
        "random_forest_bow_log_price": np.clip(forested, 0.0, None),
    }
