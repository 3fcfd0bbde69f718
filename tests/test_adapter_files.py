"""What an adapter folder serves beyond its weights: the TF-IDF model and the training items fit
saved, checked against their hashes in the recipe; an older adapter reads the LLM alone, said once."""

import json

import numpy as np
import pytest

from pricer.read.adapter_files import TRAIN_ITEMS, TrainItems, saved_hashes, saved_read_out
from pricer.read.metrics import coverage_below_nominal
from pricer.read.recipe import RECIPE_FILE, Recipe
from pricer.read.tfidf import TFIDF_JSON, TFIDF_WEIGHTS, BlendError, TfidfPrice
from tests.conftest import corpus


@pytest.fixture
def saved(tmp_path):
    """An adapter folder's read files as fit saves them: a blend of 0.6 LLM, 0.5 neighbours."""
    texts = corpus(60, 0)
    prices = list(np.random.default_rng(1).uniform(1, 900, 60))
    TfidfPrice.fit(texts, prices).save(tmp_path)
    TrainItems(prices, texts).save(tmp_path)
    recipe = Recipe(base_model="tiny", blend={"weight": 0.6, "interval_scale": 1.5, "knn_share": 0.5})
    recipe.with_files(saved_hashes(tmp_path)).save(tmp_path)
    return tmp_path, texts, prices


def test_the_saved_read_out_is_the_blend_its_items_and_model_as_fit_saved_them(saved):
    folder, texts, prices = saved
    read_out = saved_read_out(folder)
    assert (read_out.blend.weight, read_out.blend.interval_scale, read_out.blend.knn_share) == (0.6, 1.5, 0.5)
    assert read_out.train_items == TrainItems(prices, texts)
    unseen = corpus(5, 3)
    refit = TfidfPrice.fit(texts, prices)
    assert np.array_equal(read_out.partner.predict(unseen, 0.5), refit.predict(unseen, 0.5))
    assert read_out.served == (
        f"the blend fit chose, from {folder} (0.6 LLM, the partner 0.5 neighbours in log price, interval scale 1.5)"
    )
    assert saved_read_out(folder, with_items=False).train_items is None
    hashes = json.loads((folder / RECIPE_FILE).read_text())["files"]
    assert set(hashes) == {TFIDF_JSON, TFIDF_WEIGHTS, TRAIN_ITEMS}


@pytest.mark.parametrize("name", [TFIDF_WEIGHTS, TRAIN_ITEMS])
def test_a_read_file_changed_or_lost_after_fit_is_refused_naming_it(saved, name):
    folder, _, _ = saved
    path = folder / name
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(BlendError, match=rf"{name} is not the file fit saved \(its SHA-256 differs"):
        saved_read_out(folder)
    path.unlink()
    with pytest.raises(BlendError, match=rf"{name} is missing: fit saved it with the adapter"):
        saved_read_out(folder)


def test_an_adapter_whose_blend_partner_is_missing_is_refused_naming_the_files(tmp_path):
    Recipe(base_model="tiny", blend={"weight": 0.6, "interval_scale": 1.5}).save(tmp_path)
    with pytest.raises(BlendError) as refused:
        saved_read_out(tmp_path)
    assert str(refused.value) == (
        f"{tmp_path} has no tfidf.json or tfidf.safetensors, the TF-IDF model of the blend its run "
        "chose (0.6 LLM): copy it with the adapter's other files"
    )


def test_an_adapter_that_read_the_llm_alone_keeps_its_interval_scale_without_a_warning(tmp_path, capsys):
    Recipe(base_model="tiny", blend={"interval_scale": 1.25}).save(tmp_path)
    read_out = saved_read_out(tmp_path)
    assert (read_out.blend.weight, read_out.blend.interval_scale) == (1.0, 1.25)
    assert read_out.served == f"the LLM alone, as fit chose, from {tmp_path}, interval scale 1.25"
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    "measured, n, below",
    [(0.62, 600, True), (0.78, 600, False), (0.7, 20, False), (0.5, 40, True), (0.85, 100, False)],
)
def test_coverage_is_said_below_nominal_only_beyond_its_binomial_noise(measured, n, below):
    from scipy.stats import binom

    said = coverage_below_nominal(measured, 0.8, n)
    assert (said is not None) == below
    # the test's own arithmetic: the chance of so few or fewer inside an 80% interval
    assert (binom.cdf(round(measured * n), n, 0.8) < 0.05) == below
    if below:
        assert said.startswith(f"the 80% interval held {measured:.1%} of the {n} prices, below its nominal")
