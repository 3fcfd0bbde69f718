"""The price head: a ridge regression on the LLM's last hidden states, fitted at the end of fit,
saved beside the adapter, mixed into the LLM's price at the weight validation chose, and read
by every read as the blend is."""

import numpy as np
import pytest
import torch

from pricer.read.blend import Blend, choose_blend
from pricer.read.distribution import PriceReader
from pricer.read.price_head import ALPHAS, HEAD_FILE, PriceHead
from pricer.read.tfidf import BlendError
from tests.conftest import edit_recipe, publishing_fit, quotes_as_test_wrote


def test_a_head_fits_log_price_on_its_features_and_reads_back_from_its_safetensors_file(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 8)) * rng.uniform(0.1, 10, size=8)  # features of unequal scales
    prices = np.expm1(3 + x @ rng.normal(size=8) / 20)
    head = PriceHead.fit(x, prices, layers=2)
    assert np.abs(np.log1p(head.predict(x)) - np.log1p(prices)).max() < 0.05
    head.save(tmp_path)
    again = PriceHead.load(tmp_path)
    assert (again.layers, again.alpha) == (2, head.alpha) and head.alpha in ALPHAS
    assert np.array_equal(again.predict(x), head.predict(x))


def test_a_missing_or_unreadable_head_file_is_one_line_naming_it(tmp_path):
    with pytest.raises(BlendError, match=f"{tmp_path / HEAD_FILE} is missing"):
        PriceHead.load(tmp_path)
    (tmp_path / HEAD_FILE).write_bytes(b"not a head")
    with pytest.raises(BlendError, match=f"{tmp_path / HEAD_FILE}: not a price head"):
        PriceHead.load(tmp_path)
    with pytest.raises(BlendError, match="at least 5 training items, got 3"):
        PriceHead.fit(np.ones((3, 4)), [1.0, 2.0, 3.0], layers=1)


def test_a_read_gives_each_prompt_the_last_layers_states_at_its_last_token(tiny_llama):
    """The features are the final norm's output, then the layers' outputs before it, at the
    prompt's last token, the same read in a left-padded batch as alone; a read without a head
    computes none."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    reader = PriceReader(tokenizer, beam=3)
    prompts = ["A fridge.\n\nPrice is $", "A much longer fridge description.\n\nPrice is $"]
    encoded = tokenizer(prompts, padding=True, return_tensors="pt")
    reads = reader.read(model, encoded["input_ids"], encoded["attention_mask"], layers=2)
    for prompt, read in zip(prompts, reads, strict=True):
        alone = tokenizer(prompt, return_tensors="pt")
        with torch.no_grad():
            out = model.model(**alone, output_hidden_states=True)
        expected = torch.cat([out.last_hidden_state[0, -1], out.hidden_states[-2][0, -1]]).numpy()
        assert read.features.shape == expected.shape
        np.testing.assert_allclose(read.features, expected, atol=1e-4)
    batched = reader.features(model, encoded["input_ids"], encoded["attention_mask"], 2)
    np.testing.assert_allclose(batched, np.stack([r.features for r in reads]), atol=1e-6)
    assert reader.read(model, encoded["input_ids"], encoded["attention_mask"])[0].features is None
    with pytest.raises(BlendError, match="head_layers 4: the model has 3 hidden states"):
        reader.features(model, encoded["input_ids"], encoded["attention_mask"], 4)


def test_validation_chooses_the_heads_weight_and_the_blend_reads_the_same_prices_back():
    """Two reads with independent errors, the head's half the LLM's: validation mixes the head in, the mix beats the LLM
    alone, and `Blend.apply` gives the prices the choice was measured on, with the partner on
    top when it is blended too."""
    rng = np.random.default_rng(1)
    truth = np.exp(rng.normal(4, 1, 400))
    llm, head = (truth * np.exp(rng.normal(0, noise, 400)) for noise in (0.6, 0.3))
    low, high = llm * 0.7, llm * 1.4
    blend, report = choose_blend(truth, llm, low, high, None, 0.8, blend=False, calibrate=False, head=head)
    assert 0.6 <= blend.head_weight <= 0.95 and blend.weight == 1.0  # the better read weighs more
    point, lo, hi = blend.apply(llm, low, high, head=head)
    assert np.abs(point - truth).mean() == pytest.approx(report["head_mix_mae"])
    assert report["head_mix_mae"] < report["llm_mae"] and report["llm_mae"] == pytest.approx(
        np.abs(llm - truth).mean()
    )
    # the interval moved with its point in log price, its width kept
    np.testing.assert_allclose(np.log1p(hi) - np.log1p(lo), np.log1p(high) - np.log1p(low))
    with pytest.raises(BlendError, match="price head"):
        blend.apply(llm, low, high)

    tfidf = truth * np.exp(rng.normal(0, 0.6, 400))
    both, report = choose_blend(truth, llm, low, high, tfidf, 0.8, calibrate=False, head=head)
    assert both.uses_head and both.uses_tfidf
    point, _, _ = both.apply(llm, low, high, tfidf, head)
    assert np.abs(point - truth).mean() == pytest.approx(report["blend_mae"])

    noise = np.exp(rng.normal(4, 5, 400))  # a head that knows nothing is left out
    alone, _ = choose_blend(truth, llm, low, high, None, 0.8, blend=False, calibrate=False, head=noise)
    assert alone == Blend()


@pytest.fixture(scope="module")
def head_run(tmp_path_factory, tiny_llama):
    """A fit with a price head on the last two layers and no TF-IDF blend."""
    overrides = ["--model.blend.head_layers", "2", "--model.blend.enabled", "false"]
    _, run = publishing_fit(
        tmp_path_factory.mktemp("head"), tiny_llama, "head", *overrides, test_size=6, dataset_repo=False
    )
    return run


@pytest.mark.slow
def test_fit_saves_its_price_head_and_the_space_quotes_tests_prices_with_it(head_run, tmp_path):
    """The head is saved beside the adapter with its hash in the recipe; the tiny model prices far
    worse than a ridge on its own states, so validation mixes the head in; every test product
    typed into the Space gets the price `test` wrote, to the cent, the head's share in it."""
    import json
    import shutil

    from pricer.read.adapter_files import sha256
    from pricer.read.recipe import read_recipe
    from pricer.read.serving import Pricer

    adapter = head_run / "adapter"
    recipe = read_recipe(adapter)
    assert recipe.files[HEAD_FILE] == sha256(adapter / HEAD_FILE)
    assert PriceHead.load(adapter).layers == 2
    weight = recipe.blend["head_weight"]
    assert weight > 0 and recipe.blend["weight"] == 1.0
    assert json.loads((head_run / "metrics.json").read_text())["blend"]["head_weight"] == weight

    pricer = Pricer.from_adapter(str(adapter))
    assert pricer.blend == Blend(**recipe.blend)
    quotes = quotes_as_test_wrote(pricer, head_run)
    assert len(quotes) == 6
    for quote in quotes:
        mixed = np.expm1((1 - weight) * np.log1p(quote.llm_price) + weight * np.log1p(quote.head))
        assert quote.price == pytest.approx(mixed)

    copy = tmp_path / "adapter"
    shutil.copytree(adapter, copy)
    (copy / HEAD_FILE).unlink()
    with pytest.raises(BlendError, match=f"{copy / HEAD_FILE} is missing"):
        Pricer.from_adapter(str(copy))
    edit_recipe(copy, lambda data: data["files"].pop(HEAD_FILE))
    with pytest.raises(BlendError, match=f"{copy} has no {HEAD_FILE}"):
        Pricer.from_adapter(str(copy))
