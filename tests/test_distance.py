"""The distance-aware term on the price tokens (`model.price_distance`)."""

from __future__ import annotations

import math

import pytest
import torch

from pricer.train.distance import PriceDistance

VOCAB = 30
DIGITS = torch.arange(10, 20)  # token 10 + d writes the digit d


def row(probabilities: dict[int, float]) -> torch.Tensor:
    """Logits whose softmax over the digit tokens is `probabilities` (by digit), with most of
    the rest of the vocabulary far below."""
    logits = torch.full((VOCAB,), -30.0)
    for digit, p in probabilities.items():
        logits[10 + digit] = math.log(p)
    return logits


def test_the_distance_is_the_expected_gap_to_the_truth_over_the_number_tokens() -> None:
    distance = PriceDistance(DIGITS)
    logits = torch.stack([row({3: 0.5, 4: 0.25, 9: 0.25}), row({0: 1.0}), torch.zeros(VOCAB)])
    targets = torch.tensor([13, 10 + 7, 5])  # a 3, a 7, and a token that is no number
    got = distance(logits, targets)
    by_hand = (0.25 * 1 + 0.25 * 6) / 9 + 7 / 9  # the third row carries no distance
    assert float(got) == pytest.approx(by_hand, rel=1e-5)
    assert float(distance(logits, torch.tensor([1, 2, 5]))) == 0.0  # no number token at all


def test_near_misses_cost_less_than_far_ones_where_cross_entropy_sees_no_difference() -> None:
    """With $100 the truth, mass on $101 and mass on $900 are equally wrong to cross-entropy."""
    whole = torch.arange(1000) + 20
    distance = PriceDistance(whole)
    near, far = torch.full((1100,), -30.0), torch.full((1100,), -30.0)
    near[20 + 100], near[20 + 101] = 0.0, 0.0
    far[20 + 100], far[20 + 900] = 0.0, 0.0
    target = torch.tensor([20 + 100])
    ce = [float(torch.nn.functional.cross_entropy(x[None], target)) for x in (near, far)]
    assert ce[0] == pytest.approx(ce[1])
    assert float(distance(near[None], target)) == pytest.approx(0.5 * 1 / 999, rel=1e-4)
    assert float(distance(far[None], target)) == pytest.approx(0.5 * 800 / 999, rel=1e-4)


def test_its_gradient_moves_mass_toward_the_truth_and_from_the_farthest_most() -> None:
    """Gradient descent raises a logit whose gradient is negative: the truth's most, then a
    value nearer than the expected distance (2.4 digits away); it lowers the farther ones, the
    farthest and likeliest most."""
    distance = PriceDistance(DIGITS)
    logits = row({2: 0.2, 5: 0.2, 6: 0.2, 9: 0.4}).requires_grad_(True)
    distance(logits[None], torch.tensor([15])).backward()
    grad = logits.grad[10:20]
    assert float(grad[5]) < float(grad[6]) < 0 < float(grad[2]) < float(grad[9])


def configured(base: str):
    from tests.conftest import tiny_model, with_random_lora

    module = tiny_model(base, lora={"dropout": 0.0})
    module.configure_model()
    return with_random_lora(module).eval()


def labelled_batch(module, tokenizer, prompt: str, price: str):
    prompt_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    price_ids = tokenizer(price, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt_ids + price_ids])
    labels = torch.tensor([[-100] * len(prompt_ids) + price_ids])
    return ids, torch.ones_like(ids), labels, price_ids


def loss_with(module, ids, mask, labels, weight: float) -> float:
    module.hparams.price_distance = weight
    with torch.no_grad():
        loss, _ = module.completion_loss(ids, mask, labels)
    return float(loss)


def by_hand(module, ids, mask, labels, tokenizer, values: dict[int, int]) -> float:
    """The expected distance computed here from the model's full logits, one row at a time."""
    with torch.no_grad():
        logits = module.model(input_ids=ids, attention_mask=mask).logits[0, :-1].float()
    total, largest = 0.0, max(values)
    for position, target in enumerate(labels[0, 1:].tolist()):
        if target not in values.values():
            continue
        truth = next(v for v, token in values.items() if token == target)
        probs = torch.softmax(logits[position, list(values.values())], dim=-1)
        total += sum(float(p) * abs(v - truth) / largest for v, p in zip(values, probs, strict=True))
    return total


def test_the_loss_adds_the_weighted_distance_at_each_digit(tiny_llama) -> None:
    """One digit a token (the tiny model's tokenizer, as SmolLM2's): every digit of the price,
    the cents' too, carries the distance on the digits 0-9."""
    module = configured(tiny_llama)
    tokenizer = module.reader.tokenizer
    assert module.reader.kind == "digits"
    ids, mask, labels, price_ids = labelled_batch(module, tokenizer, "Kettle\n\nPrice is $", "47.00")
    values = {d: tokenizer.convert_tokens_to_ids(str(d)) for d in range(10)}
    assert sum(t in values.values() for t in price_ids) == 4
    plain, weighted = (loss_with(module, ids, mask, labels, w) for w in (0.0, 0.7))
    expected = by_hand(module, ids, mask, labels, tokenizer, values)
    assert expected > 0
    assert weighted - plain == pytest.approx(0.7 * expected, rel=1e-4)


def test_a_whole_number_tokenizer_carries_it_at_the_dollars_alone(tiny_llama3) -> None:
    """Llama 3 writes $123.00 as "123", ".", "00": the distance is over the 1,000 whole numbers,
    at the dollars' token only ("00" is not the number 0's token)."""
    module = configured(tiny_llama3)
    tokenizer = module.reader.tokenizer
    assert module.reader.kind == "whole"
    ids, mask, labels, price_ids = labelled_batch(module, tokenizer, "Kettle\n\nPrice is $", "123.00")
    values = {v: int(t) for v, t in enumerate(module.reader.number_ids)}
    assert [t in values.values() for t in price_ids] == [True, False, False]
    plain, weighted = (loss_with(module, ids, mask, labels, w) for w in (0.0, 2.0))
    assert weighted - plain == pytest.approx(
        2.0 * by_hand(module, ids, mask, labels, tokenizer, values), rel=1e-4
    )


def test_training_with_it_runs_through_the_steps_and_changes_the_losses(tiny_llama, raw_items, tmp_path):
    from tests.conftest import Losses, cpu_trainer, tiny_datamodule, tiny_model

    runs = {}
    for weight in (0.0, 1.0):
        losses = Losses()
        module = tiny_model(tiny_llama, price_distance=weight, lora={"dropout": 0.0})
        cpu_trainer(tmp_path / str(weight), [losses]).fit(
            module, datamodule=tiny_datamodule(raw_items, tiny_llama)
        )
        runs[weight] = [loss for _, loss in sorted(losses.by_step.items())]
    assert len(runs[1.0]) == len(runs[0.0]) == 8
    assert runs[1.0][0] > runs[0.0][0]  # the same first weights: the distance on top of cross-entropy
    assert runs[1.0][1:] != pytest.approx(runs[0.0][1:], rel=1e-4)  # then other gradients, other weights


def test_a_negative_weight_is_one_line(tmp_path, capsys) -> None:
    from pricer.cli.main import main
    from tests.conftest import SMOKE

    with pytest.raises(SystemExit) as stop:
        main(
            [
                "fit",
                "--config",
                SMOKE,
                "--trainer.default_root_dir",
                str(tmp_path),
                "--model.price_distance",
                "-1",
            ]
        )
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "model.price_distance" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) <= 2
