"""The TF-IDF model beside the adapter and the blend fit chooses on validation (pricer/read/blend.py)."""

import json

import numpy as np
import pytest

from pricer.read.blend import Blend, blend_summary, choose_blend
from pricer.read.tfidf import KNN_K, TFIDF_JSON, TFIDF_WEIGHTS, BlendError, TfidfPrice, partner_prices
from tests.conftest import corpus


@pytest.fixture(scope="module")
def fitted():
    texts = corpus(300, 0)
    prices = np.random.default_rng(1).uniform(1, 900, 300)
    return TfidfPrice.fit(texts, prices), texts, prices


def test_the_tfidf_model_is_the_baseline_rows_fit(fitted):
    """The same pipeline the TF-IDF baseline row always was: the blend's partner is that row."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline

    from pricer.read.baselines import baseline_predictions

    model, texts, prices = fitted
    pipeline = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1, max_features=50_000),
        Ridge(alpha=1.0),
    ).fit(texts, np.log1p(prices))
    unseen = corpus(40, 2, " unseen words")
    expected = np.clip(np.expm1(pipeline.predict(unseen)), 0, None)
    assert np.array_equal(model.predict(unseen), expected)
    row = baseline_predictions(prices, texts, unseen)["tfidf_linear_log_price"]
    assert np.array_equal(row, expected)


def test_the_saved_model_reads_back_to_the_same_prices_without_pickle(fitted, tmp_path):
    model, _, _ = fitted
    model.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([TFIDF_JSON, TFIDF_WEIGHTS])
    header = json.loads((tmp_path / TFIDF_JSON).read_text(encoding="utf-8"))
    assert "café" in header["vocabulary"] and header["vectorizer"]["ngram_range"] == [1, 2]
    unseen = corpus(40, 3, " café Ünïcode")
    assert np.array_equal(TfidfPrice.load(tmp_path).predict(unseen), model.predict(unseen))


def test_the_neighbours_are_the_k_nearest_by_cosine_weighted_by_inverse_distance(fitted):
    """The nearest-neighbours row (scikit-learn's KNeighborsRegressor underneath), checked
    against the definition worked out here with dense numpy, in log price; and the baseline row
    is that model's."""
    from pricer.read.baselines import baseline_predictions

    model, texts, prices = fitted
    rows = model.vectorizer.transform(texts).toarray()
    unseen = corpus(40, 4)
    queries = model.vectorizer.transform(unseen).toarray()
    expected = []
    for query in queries:
        distance = 1 - rows @ query / (np.linalg.norm(rows, axis=1) * np.linalg.norm(query))
        nearest = np.argsort(distance, kind="stable")[:KNN_K]
        weights = 1 / distance[nearest]
        expected.append((weights * np.log1p(prices)[nearest]).sum() / weights.sum())
    assert np.allclose(model.knn_log_price(unseen), expected, rtol=1e-9, atol=1e-12)
    row = baseline_predictions(prices, texts, unseen)["tfidf_knn_log_price"]
    assert np.allclose(row, np.expm1(expected), rtol=1e-9)


def test_a_train_item_is_its_own_nearest_and_an_unknown_text_gets_the_train_mean(fitted):
    model, texts, prices = fitted
    assert model.predict_knn([texts[7]])[0] == pytest.approx(prices[7])
    assert model.knn_log_price(["zzz qqq"])[0] == pytest.approx(np.log1p(prices).mean())


def test_the_partner_mixes_ridge_and_neighbours_in_log_price(fitted):
    model, _, _ = fitted
    unseen = corpus(20, 5)
    ridge, near = model.predict(unseen), model.predict_knn(unseen)
    assert np.array_equal(model.predict(unseen, 0.0), ridge)
    assert np.array_equal(model.predict(unseen, 1.0), near)
    mixed = model.predict(unseen, 0.3)
    assert np.allclose(np.log1p(mixed), 0.7 * np.log1p(ridge) + 0.3 * np.log1p(near))
    assert np.array_equal(mixed, partner_prices(ridge, near, 0.3))  # what fit chose with


def test_the_saved_neighbours_read_back_to_the_same_prices(fitted, tmp_path):
    model, _, _ = fitted
    model.save(tmp_path)
    header = json.loads((tmp_path / TFIDF_JSON).read_text(encoding="utf-8"))
    assert (header["version"], header["knn_k"]) == (3, KNN_K)
    unseen = corpus(40, 6, " café")
    loaded = TfidfPrice.load(tmp_path)
    assert np.array_equal(loaded.predict(unseen, 0.45), model.predict(unseen, 0.45))


def _edit_arrays(folder, **arrays):
    from safetensors.numpy import load_file, save_file

    saved = load_file(str(folder / TFIDF_WEIGHTS))
    save_file({**saved, **arrays}, str(folder / TFIDF_WEIGHTS))


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: (d / TFIDF_WEIGHTS).unlink(), "tfidf.safetensors is missing"),
        (lambda d: (d / TFIDF_JSON).write_text("{not json"), "the TF-IDF model cannot be read"),
        (
            lambda d: (d / TFIDF_JSON).write_text('{"format": "other"}'),
            "not a version 3 pricer TF-IDF model",
        ),
        (lambda d: _edit(d, version=2), "not a version 3 pricer TF-IDF model"),
        (lambda d: _edit(d, vocabulary=["a", "a"]), "vocabulary must be a list of distinct terms"),
        (lambda d: _edit(d, vocabulary=["a", "b"]), "must both have the vocabulary's 2 entries"),
        (lambda d: _edit(d, vectorizer={"ngram_range": [1, 2]}), "vectorizer settings must be"),
        (lambda d: _edit(d, knn_k=3), "knn_k must be 5"),
        (lambda d: _edit_arrays(d, rows_indices=np.full(5, 10**6)), "the train rows do not fit together"),
        (lambda d: _edit_arrays(d, rows_log_price=np.zeros(3)), "the train rows do not fit together"),
    ],
)
def test_a_damaged_tfidf_model_is_named(fitted, tmp_path, damage, message):
    fitted[0].save(tmp_path)
    damage(tmp_path)
    with pytest.raises(BlendError, match=message):
        TfidfPrice.load(tmp_path)


def _edit(folder, **fields):
    header = json.loads((folder / TFIDF_JSON).read_text(encoding="utf-8"))
    (folder / TFIDF_JSON).write_text(json.dumps({**header, **fields}), encoding="utf-8")


def test_weight_one_and_scale_one_read_the_llm_unchanged():
    point, low, high = np.array([12.3, 456.0]), np.array([10.0, 400.0]), np.array([15.0, 480.0])
    for got, given in zip(Blend().apply(point, low, high), (point, low, high), strict=True):
        assert np.array_equal(got, given)
    with pytest.raises(BlendError, match="needs the TF-IDF"):
        Blend(0.5).apply(point, low, high)


def test_the_blend_is_a_weighted_mean_in_log_price_and_moves_the_interval_with_it():
    point, low, high, tfidf = np.array([100.0]), np.array([50.0]), np.array([300.0]), np.array([20.0])
    p, lo, hi = Blend(0.25).apply(point, low, high, tfidf)
    assert p[0] == pytest.approx(np.expm1(0.25 * np.log1p(100) + 0.75 * np.log1p(20)))
    # the interval keeps its distances from the point in log price
    assert np.log1p(p) - np.log1p(lo) == pytest.approx(np.log1p(100) - np.log1p(50))
    assert np.log1p(hi) - np.log1p(p) == pytest.approx(np.log1p(300) - np.log1p(100))
    assert Blend(0.0).apply(point, low, high, tfidf)[0][0] == pytest.approx(20.0)
    # scaled: twice the distances; the moved distribution's quantiles are the moved quantiles
    _, lo2, hi2 = Blend(1.0, 2.0).apply(point, low, high)
    assert np.log1p(100) - np.log1p(lo2) == pytest.approx(2 * (np.log1p(100) - np.log1p(50)))
    prices = np.array([10.0, 50.0, 100.0, 300.0, 900.0])
    moved = Blend(0.4, 1.5).move(prices, 100.0, 20.0)
    assert np.all(np.diff(moved) > 0)
    assert moved[1] == pytest.approx(Blend(0.4, 1.5).apply(point, low, high, tfidf)[1][0])


def noisy(truth, spread, seed):
    return truth * np.exp(np.random.default_rng(seed).normal(0, spread, len(truth)))


def test_validation_chooses_a_blend_when_two_independent_errors_average_out():
    truth = np.random.default_rng(0).uniform(5, 500, 600)
    llm, tfidf = noisy(truth, 0.5, 1), noisy(truth, 0.5, 2)
    blend, report = choose_blend(truth, llm, llm * 0.8, llm * 1.25, tfidf, 0.8, calibrate=False)
    assert 0.2 < blend.weight < 0.8
    assert report["blend_mae"] < 0.85 * min(report["llm_mae"], report["tfidf_mae"])
    assert report["best_mix_weight"] == blend.weight


def test_validation_keeps_the_llm_alone_when_tfidf_only_adds_noise():
    truth = np.random.default_rng(0).uniform(5, 500, 600)
    llm, tfidf = noisy(truth, 0.05, 1), noisy(truth, 2.0, 2)
    blend, report = choose_blend(truth, llm, llm * 0.9, llm * 1.1, tfidf, 0.8, calibrate=False)
    assert blend == Blend(1.0, 1.0)
    assert report["blend_mae"] == report["llm_mae"] < report["best_mix_mae"]
    assert "the LLM alone chosen" in blend_summary(report, 0.8)


def test_validation_gives_the_neighbours_their_share_when_their_errors_are_their_own():
    truth = np.random.default_rng(0).uniform(5, 500, 600)
    llm, tfidf, near = noisy(truth, 0.5, 1), noisy(truth, 0.5, 2), noisy(truth, 0.5, 3)
    blend, report = choose_blend(truth, llm, llm * 0.8, llm * 1.25, tfidf, 0.8, calibrate=False, knn=near)
    assert 0.2 < blend.knn_share < 0.8 and 0.1 < blend.weight < 0.7
    without, _ = choose_blend(truth, llm, llm * 0.8, llm * 1.25, tfidf, 0.8, calibrate=False)
    ridge_only = np.abs(without.apply(llm, llm, llm, tfidf)[0] - truth).mean()
    assert report["blend_mae"] < 0.95 * ridge_only
    point = blend.apply(llm, llm, llm, partner_prices(tfidf, near, blend.knn_share))[0]
    assert np.abs(point - truth).mean() == pytest.approx(report["blend_mae"])
    assert "the partner" in blend_summary(report, 0.8) and "for the nearest neighbours" in blend_summary(
        report, 0.8
    )
    # neighbours that only add noise get no share: ties go to the ridge
    useless, report = choose_blend(
        truth, llm, llm * 0.8, llm * 1.25, tfidf, 0.8, calibrate=False, knn=noisy(truth, 3.0, 4)
    )
    assert useless.knn_share == 0.0 and useless.weight == without.weight


def test_an_interval_that_holds_too_few_prices_is_widened_on_validation():
    truth = np.random.default_rng(0).uniform(5, 500, 600)
    llm = noisy(truth, 0.5, 1)
    narrow_low, narrow_high = llm * np.exp(-0.2), llm * np.exp(0.2)  # holds about 30%
    blend, report = choose_blend(truth, llm, narrow_low, narrow_high, None, 0.8)
    assert report["coverage_before"] < 0.5
    assert blend.weight == 1.0 and blend.interval_scale > 2
    assert abs(report["coverage_after"] - 0.8) <= 0.05
    assert "widths scaled by" in blend_summary(report, 0.8)
    # an interval within 5 points is left as it is
    wide_low, wide_high = llm * np.exp(-0.64), llm * np.exp(0.64)
    blend, report = choose_blend(truth, llm, wide_low, wide_high, None, 0.8)
    assert abs(report["coverage_before"] - 0.8) <= 0.05 and blend.interval_scale == 1.0
