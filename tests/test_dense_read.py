"""The dense CPU read (pricer/read/dense.py) reads the prices the 4-bit read does, and leaves
the model being trained exactly as it was."""

import bitsandbytes as bnb
import numpy as np
import pytest
import torch

from pricer.read.dense import DenseLinear, dense_weights
from tests.conftest import Losses, batch, cpu_trainer, tiny_datamodule, tiny_model, trained_like


def read(model, ids, mask):
    return model.reader.read(model.model, ids, mask)


def layers(model) -> list[int]:
    return [id(m) for m in model.model.modules()]


@pytest.mark.parametrize("compute_dtype", ["float32", "bfloat16"])
def test_the_dense_read_prices_as_the_4bit_read_and_puts_the_4bit_layers_back(tiny_llama, compute_dtype):
    model = trained_like(tiny_llama, quantization={"compute_dtype": compute_dtype})
    ids, mask = batch(model)
    before, weights = layers(model), {k: v.clone() for k, v in model.model.state_dict().items()}
    four_bit = read(model, ids, mask)
    with model.model.disable_adapter():
        untrained = read(model, ids, mask)
    # the LoRA moves the read (the tiny random model's prices sit near $4.5): a read that left
    # the update out would fail the comparison below
    assert max(abs(a.mean - b.mean) for a, b in zip(four_bit, untrained, strict=True)) > 0.05
    with dense_weights(model.model) as swapped:
        assert swapped == 14  # seven projections in each of two layers
        assert not any(isinstance(m, bnb.nn.Linear4bit) for m in model.model.modules())
        assert any(isinstance(m, DenseLinear) for m in model.model.modules())
        dense = read(model, ids, mask)
    for a, b in zip(four_bit, dense, strict=True):
        np.testing.assert_array_equal(a.prices, b.prices)
        if compute_dtype == "float32":  # the LoRA merged in fp32: float rounding only
            np.testing.assert_allclose(a.probs, b.probs, rtol=1e-4, atol=1e-7)
        else:  # 16-bit: the LoRA path is kept as peft computes it, and the weights are the same
            np.testing.assert_array_equal(a.probs, b.probs)
    assert layers(model) == before
    after = model.model.state_dict()
    assert after.keys() == weights.keys() and all(torch.equal(after[k], weights[k]) for k in weights)


def test_under_bf16_autocast_the_dense_read_keeps_the_lora_layers_and_reads_the_same(tiny_llama):
    """bf16-mixed (configs/sample.yaml): autocast runs the base's matmuls and the LoRA layers in
    bf16 on both paths; a LoRA update merged into the weights would be rounded with them. Merged,
    37% of a trained adapter's 600 test prices moved by more than $0.50 and 1%."""
    model = trained_like(tiny_llama)
    ids, mask = batch(model)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        four_bit = read(model, ids, mask)
        with dense_weights(model.model, merge=False):
            kept = read(model, ids, mask)
        with dense_weights(model.model, merge=True):
            merged = read(model, ids, mask)
    for a, b in zip(four_bit, kept, strict=True):
        np.testing.assert_array_equal(a.prices, b.prices)
        np.testing.assert_array_equal(a.probs, b.probs)
    assert any(not np.array_equal(a.probs, c.probs) for a, c in zip(four_bit, merged, strict=True))


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_validation_reads_dense_and_training_goes_on_as_with_the_4bit_read(
    tiny_llama, raw_items, tmp_path, precision
):
    """Validation mid-fit swaps the layers in and back: the losses after it are those of a run
    validated in 4-bit, to the bit, and the validation MAE agrees to float rounding."""
    runs = {}
    for cpu_read in ("dense", "4bit"):
        model = tiny_model(tiny_llama, read={"cpu": cpu_read})
        losses = Losses()
        trainer = cpu_trainer(
            tmp_path / cpu_read,
            [losses],
            limit_val_batches=1,
            val_check_interval=2,
            max_steps=6,
            precision=precision,
        )
        trainer.fit(model, datamodule=tiny_datamodule(raw_items, tiny_llama))
        assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.model.modules())
        assert not any(isinstance(m, DenseLinear) for m in model.model.modules())
        runs[cpu_read] = (losses.by_step, float(trainer.callback_metrics["val_mae"]))
    assert runs["dense"][0] == runs["4bit"][0] and len(runs["dense"][0]) == 6
    assert runs["dense"][1] == pytest.approx(runs["4bit"][1], rel=1e-4)


def test_the_space_reader_is_dense_on_the_cpu_and_quotes_what_the_4bit_one_does(tiny_llama, tmp_path):
    from pricer.read.recipe import Recipe
    from pricer.read.serving import Pricer

    trained_like(tiny_llama).save_adapter(tmp_path / "adapter")
    quotes = {}
    for cpu_read in ("dense", "4bit"):
        pricer = Pricer(
            Recipe(base_model=tiny_llama, read={"cpu": cpu_read}), str(tmp_path / "adapter"), device="cpu"
        )
        has_4bit = any(isinstance(m, bnb.nn.Linear4bit) for m in pricer.model.modules())
        assert has_4bit == (cpu_read == "4bit")
        quotes[cpu_read] = [pricer.quote(f"Kettle {i}", "A kettle that boils water fast.") for i in range(3)]
    for dense, four_bit in zip(quotes["dense"], quotes["4bit"], strict=True):
        assert dense.price == pytest.approx(four_bit.price, rel=1e-4)
        assert (dense.low, dense.high) == (four_bit.low, four_bit.high)


def test_on_a_gpu_the_4bit_layers_stay(tiny_llama, monkeypatch):
    """The dense read is for the CPU: on a GPU (simulated: the model's device as the trainer's
    root device) validation, test and predict keep the 4-bit layers, where memory matters."""
    from pricer.read.dense import can_read_dense

    model = trained_like(tiny_llama)
    assert can_read_dense(model.model, torch.device("cpu"))
    assert not can_read_dense(model.model, torch.device("cuda", 0))
    monkeypatch.setattr(type(model), "target_device", property(lambda self: torch.device("cuda", 0)))
    model.read_dense()
    assert model._dense is None and any(isinstance(m, bnb.nn.Linear4bit) for m in model.model.modules())


def test_the_space_reads_a_bf16_mixed_run_as_its_test_did(tiny_llama, tmp_path):
    """An adapter tested under bf16-mixed is quoted under the same autocast with its LoRA layers
    kept (recipe.precision): the probabilities test's read gives for the same prompt, where a
    merged fp32 read differs."""
    from pricer.read.recipe import Recipe
    from pricer.read.serving import Pricer

    model = trained_like(tiny_llama)
    model.save_adapter(tmp_path / "adapter")
    quoted = {}
    for precision in ("bf16-mixed", "32-true"):
        pricer = Pricer(
            Recipe(base_model=tiny_llama, precision=precision), str(tmp_path / "adapter"), device="cpu"
        )
        kept = any(hasattr(m, "lora_A") for m in pricer.model.modules())
        assert kept == (precision == "bf16-mixed")  # merged only without autocast
        quote = pricer.quote("Widget pro max", "with a long description of it")
        quoted[precision] = quote.distribution
    encoded = model.reader.tokenizer(quote.prompt, return_tensors="pt")
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as test reads under bf16-mixed
        (tested,) = read(model, encoded["input_ids"], encoded["attention_mask"])
    np.testing.assert_array_equal(quoted["bf16-mixed"].prices, tested.prices)
    np.testing.assert_allclose(quoted["bf16-mixed"].probs, tested.probs, rtol=1e-6)
    assert not np.allclose(quoted["32-true"].probs, tested.probs, rtol=1e-3)
