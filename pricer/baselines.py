"""Baselines on the same test split: what a fine-tuned model has to beat.

The training mean and median as constants, and a TF-IDF linear model on log price trained on
the train split (a fair, cheap text model: if the LLM does not beat it, say so).
"""

from __future__ import annotations

import numpy as np


def baseline_predictions(train_prices, train_texts, test_texts) -> dict[str, np.ndarray]:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline

    prices = np.asarray(train_prices, dtype=np.float64)
    n = len(test_texts)
    tfidf = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1, max_features=50_000),
        Ridge(alpha=1.0),
    )
    tfidf.fit(list(train_texts), np.log1p(prices))
    predicted = np.expm1(tfidf.predict(list(test_texts)))
    return {
        "train_mean": np.full(n, prices.mean()),
        "train_median": np.full(n, float(np.median(prices))),
        "tfidf_linear_log_price": np.clip(predicted, 0.0, None),
    }
