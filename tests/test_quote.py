"""One read for every price (pricer/read/quote.py): the module that trained an adapter and the
Space that serves it price a prompt through the same Reader, blend included."""

import numpy as np
import pytest
import torch

from pricer.data.prompt import text_from_prompt
from pricer.read.blend import Blend
from pricer.read.distribution import PriceDistribution
from pricer.read.quote import Reader
from pricer.read.tfidf import TfidfPrice
from tests.conftest import PROMPTS, batch, trained_like

TRAIN = [
    ("Acme kettle stainless steel fast boil", 35.0),
    ("A heavy rack for the oven", 18.0),
    ("Widget pro max with a motor", 240.0),
    ("Small kettle, plastic", 12.0),
    ("Oven rack chrome", 22.0),
    ("Widget mini", 60.0),
]


def blended(tiny_llama):
    model = trained_like(tiny_llama)
    model.blend = Blend(weight=0.6, interval_scale=1.4, knn_share=0.5)
    model.tfidf = TfidfPrice.fit([t for t, _ in TRAIN], np.array([p for _, p in TRAIN]))
    return model


def test_the_space_quotes_the_trained_modules_blended_prices_to_the_cent(tiny_llama, tmp_path):
    """fit's test reads a left-padded batch through PriceModel.read_prices; the Space reads
    each prompt alone through Pricer.quote_prompt from the saved adapter: the same prices, to the
    cent, for the blend's point and interval and for the LLM's own."""
    from pricer.read.serving import Pricer

    model = blended(tiny_llama)
    ids, mask = batch(model)
    rows = model.read_prices(
        {"prompt_ids": ids, "prompt_mask": mask, "text": [text_from_prompt(p) for p in PROMPTS]}
    )
    model.save_adapter(tmp_path / "adapter")
    pricer = Pricer.from_adapter(str(tmp_path / "adapter"), base_model=tiny_llama, read={"cpu": "4bit"})
    assert pricer.blend == model.blend
    moved = 0
    for prompt, row in zip(PROMPTS, rows, strict=True):
        quote = pricer.quote_prompt(prompt)
        got = (quote.price, quote.low, quote.high, quote.llm_price)
        want = (row["predicted"], row["low"], row["high"], row["llm_predicted"])
        assert [round(v, 2) for v in got] == [round(v, 2) for v in want], prompt
        moved += round(quote.price, 2) != round(quote.llm_price, 2)
    assert moved  # the blend moved prices, so the partner was read on both sides


def test_a_read_blends_the_llms_point_and_moves_its_distribution_with_it(tiny_llama):
    """Each Read's price is the blend of the LLM's point with the partner's price, and its
    distribution's prices are moved the same way (their median is the blended median)."""
    model = blended(tiny_llama)
    ids, mask = batch(model)
    texts = [text_from_prompt(p) for p in PROMPTS]
    reader = Reader(model.reader, "median", 0.8, model.blend, model.tfidf)
    reads = reader.price(model.model, ids, mask, texts)
    partner = model.tfidf.predict(texts, model.blend.knn_share)
    for read, alone in zip(reads, partner, strict=True):
        assert read.partner == pytest.approx(float(alone))
        expected = np.expm1(0.6 * np.log1p(read.llm_price) + 0.4 * np.log1p(alone))
        assert read.price == pytest.approx(expected)
        d = read.distribution
        assert PriceDistribution(read.prices, d.probs, d.left_out).median == pytest.approx(read.price)
    llm_only = Reader(model.reader, "median", 0.8).price(model.model, ids, mask, texts)
    assert [r.llm_price for r in llm_only] == [r.llm_price for r in reads]
    assert all(r.price == r.llm_price and r.partner is None for r in llm_only)


def test_a_mixed_precision_is_read_under_its_autocast_and_a_true_one_is_not(tiny_llama):
    model = trained_like(tiny_llama)
    seen = []

    class Spy(type(model.reader)):
        def read(self, model, ids, mask, layers=0):
            seen.append(torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu"))
            return super().read(model, ids, mask, layers)

    spy = Spy(model.reader.tokenizer)
    ids, mask = batch(model)
    for precision in ("32-true", "bf16-mixed", "bf16-true"):
        Reader(spy, precision=precision).price(model.model, ids, mask, ["x"] * len(PROMPTS))
    assert seen == [False, torch.bfloat16, False]


def test_in_16_bits_each_prompt_is_read_alone_as_the_space_reads_it(tiny_llama, tmp_path):
    """Under bf16-mixed fit's test reads a left-padded batch through the same Reader as the
    Space, which reads each prompt alone: every distribution is the Space's exactly, so every
    price agrees to the cent. In fp32 the batch is kept (its rounding moves no cent)."""
    from pricer.read.quote import reads_alone
    from pricer.read.serving import Pricer

    assert reads_alone("bf16-mixed", torch.float32) and reads_alone("16-mixed", torch.float32)
    assert reads_alone("32-true", torch.float16) and not reads_alone("32-true", torch.float32)
    model = blended(tiny_llama)
    ids, mask = batch(model)
    texts = [text_from_prompt(p) for p in PROMPTS]
    tested = Reader(model.reader, "median", 0.8, model.blend, model.tfidf, "bf16-mixed", alone=True)
    reads = tested.price(model.model, ids, mask, texts)
    model.save_adapter(tmp_path / "adapter")
    pricer = Pricer.from_adapter(
        str(tmp_path / "adapter"), base_model=tiny_llama, read={"cpu": "4bit"}, precision="bf16-mixed"
    )
    assert pricer.reader.alone and pricer.reader.autocast == torch.bfloat16
    for prompt, read in zip(PROMPTS, reads, strict=True):
        quote = pricer.quote_prompt(prompt)
        np.testing.assert_array_equal(quote.distribution.probs, read.distribution.probs)
        assert (quote.price, quote.low, quote.high) == (read.price, read.low, read.high)
    # each prompt went through the reader alone and unpadded (read in a padded batch, the two
    # shorter prompts' probabilities moved by up to 9e-6 on the development machine)
    shapes = []

    class Spy(type(model.reader)):
        def read(self, model, ids, mask, layers=0):
            shapes.append((tuple(ids.shape), int(mask.sum())))
            return super().read(model, ids, mask, layers)

    Reader(Spy(model.reader.tokenizer), precision="bf16-mixed", alone=True).price(
        model.model, ids, mask, texts
    )
    assert shapes == [((1, int(m.sum())), int(m.sum())) for m in mask]


def test_on_a_t4_the_module_reads_alone_even_in_32_true(tiny_llama, monkeypatch):
    """On a GPU (simulated: the trainer's root device is CUDA, the card a T4 of compute
    capability 7.5) the auto compute dtype is fp16, so the 4-bit layers compute in 16 bits and
    test reads each prompt alone; on the CPU the same module keeps its batches."""
    import pricer.base.precision as precision

    model = trained_like(tiny_llama)
    assert not model.reading().alone  # the CPU: fp32
    monkeypatch.setattr(precision, "card", lambda device=None: ((7, 5), "Tesla T4"))
    monkeypatch.setattr(type(model), "target_device", property(lambda self: torch.device("cuda", 0)))
    reading = model.reading()
    assert reading.alone and reading.autocast is None  # no trainer: 32-true


def test_reads_run_the_lm_head_in_its_own_dtype_outside_autocast(tiny_llama):
    """Under bf16-mixed, as in training, the head computes in its fp32 weights: no 16-bit copy of
    Llama 3's 128k-token head each read, and logits in fp32 as the loss's."""
    from pricer.base.head import head_in_its_dtype
    from pricer.read.quote import Reader
    from tests.conftest import batch, trained_like

    module = trained_like(tiny_llama)
    head = module.model.get_base_model().get_output_embeddings()
    seen = []
    hook = head.register_forward_hook(lambda mod, args, out: seen.append((args[0].dtype, out.dtype)))
    try:
        Reader(module.reader, precision="bf16-mixed").distributions(module.model, *batch(module))
        assert seen and set(seen) == {(head.weight.dtype, head.weight.dtype)}
        with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():  # the model's own forward
            seen.clear()
            module.model(input_ids=batch(module)[0][:1])
            assert seen[0][1] == torch.bfloat16  # outside the reader, autocast's as before
        with head_in_its_dtype(module.model):
            assert "forward" in vars(head)
        assert "forward" not in vars(head)  # put back
    finally:
        hook.remove()
