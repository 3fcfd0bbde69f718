"""The TF-IDF features of product texts: one definition for the TF-IDF baseline, the blend's
classical model and the neighbour retrieval of the prompts (`neighbors.Retriever`)."""

from __future__ import annotations

import numpy as np

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


def tfidf_vectorizer(settings: dict = VECTORIZER, vocabulary: dict | None = None):
    """scikit-learn's TfidfVectorizer with these settings (a given vocabulary replaces the
    ones that choose it), in float64."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    kept = {k: v for k, v in settings.items() if k not in ("min_df", "max_features") or vocabulary is None}
    return TfidfVectorizer(
        **{**kept, "ngram_range": tuple(settings["ngram_range"]), "dtype": np.float64}, vocabulary=vocabulary
    )
