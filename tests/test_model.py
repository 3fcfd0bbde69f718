"""The 4-bit LoRA model on the CPU: a tiny random Llama, and the real SmolLM2 from its GGUF."""

import numpy as np
import pytest
import torch

from pricer.train.model import PriceModel
from tests.conftest import with_random_lora


def lora_and_base(module):
    """LoRA weights, and the base weights as the layers apply them.

    bitsandbytes repacks a 4-bit weight for its CPU kernel on the first training forward, so
    the packed bytes change while the weight does not: a 4-bit layer is compared through what
    it computes on the identity matrix.
    """
    import bitsandbytes as bnb

    lora = {n: p.detach().clone() for n, p in module.named_parameters() if "lora_" in n}
    base = {
        n: p.detach().clone()
        for n, p in module.named_parameters()
        if "lora_" not in n and p.dtype.is_floating_point
    }
    with torch.no_grad():
        for name, layer in module.named_modules():
            if isinstance(layer, bnb.nn.Linear4bit):
                base[name] = layer(torch.eye(layer.in_features)).clone()
    return lora, base


def test_tiny_llama_loads_in_4bit_with_only_lora_trainable(tiny_llama):
    import bitsandbytes as bnb

    model = PriceModel(base_model=tiny_llama, lora={"r": 8, "alpha": 16})
    model.configure_model()
    q_proj = model.model.base_model.model.model.layers[0].self_attn.q_proj
    assert isinstance(q_proj.base_layer, bnb.nn.Linear4bit)
    assert q_proj.base_layer.weight.quant_state.quant_type == "nf4"
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert {n.split(".")[-4] for n in trainable} == {"q_proj", "k_proj", "v_proj", "o_proj"}


def test_full_precision_is_a_switch(tiny_llama):
    model = PriceModel(base_model=tiny_llama, quantization={"weights": "none"})
    model.configure_model()
    q_proj = model.model.base_model.model.model.layers[0].self_attn.q_proj
    assert type(q_proj.base_layer) is torch.nn.Linear


def test_a_few_steps_move_lora_weights_only(tiny_llama, raw_items, tmp_path):
    from tests.conftest import cpu_trainer, tiny_datamodule

    model = PriceModel(
        base_model=tiny_llama,
        lora={"r": 8, "alpha": 16},
        optimizer={"learning_rate": 1e-2, "warmup_ratio": 0},
    )
    model.configure_model()
    lora_before, base_before = lora_and_base(model)
    cpu_trainer(tmp_path, [], max_steps=4).fit(model, datamodule=tiny_datamodule(raw_items, tiny_llama))
    lora_after, base_after = lora_and_base(model)
    assert max(float((lora_before[n] - lora_after[n]).abs().max()) for n in lora_before) > 1e-2
    # The repacked CPU kernel rounds differently (by up to 2**-12 here), far below what 4 steps
    # at lr 1e-2 do to a trained weight.
    moved = [n for n in base_before if not torch.allclose(base_before[n], base_after[n], rtol=0, atol=1e-3)]
    assert not moved, moved[:5]


def test_eight_bit_on_the_cpu_is_refused_before_loading(tiny_llama):
    model = PriceModel(base_model=tiny_llama, quantization={"weights": "8bit"})
    with pytest.raises(RuntimeError, match="8bit does not run on the CPU"):
        model.configure_model()


@pytest.mark.slow
def test_smollm2_from_gguf_in_4bit_with_lora(gguf):
    import bitsandbytes as bnb

    from pricer.base.load import load_tokenizer

    model = PriceModel(base_model=str(gguf))
    model.configure_model()
    layers = model.model.base_model.model.model.layers
    assert len(layers) == 30
    assert isinstance(layers[0].self_attn.q_proj.base_layer, bnb.nn.Linear4bit)
    tokenizer = load_tokenizer(str(gguf))
    batch = tokenizer(
        ["How much does this cost to the nearest dollar?\n\nA kettle\n\nPrice is $"], return_tensors="pt"
    )
    logits = model(batch["input_ids"], batch["attention_mask"]).logits
    # a real pretrained model: after "$" a digit is among its likeliest next tokens
    top = tokenizer.convert_ids_to_tokens(logits[0, -1].topk(5).indices)
    assert any(t.strip().isdigit() for t in top), top


def test_a_model_missing_offline_says_what_to_do(tmp_path):
    model = PriceModel(base_model="meta-llama/Llama-3.1-8B")
    with pytest.raises(FileNotFoundError, match="not in the local cache and HF_HUB_OFFLINE is set"):
        model.configure_model()


def test_a_gated_model_names_itself_and_how_to_log_in(monkeypatch):
    """The Hub's answer for a gated repo without a token is the only double here."""
    import httpx
    from huggingface_hub.errors import GatedRepoError
    from transformers import AutoModelForCausalLM

    def refuse(*args, **kwargs):
        response = httpx.Response(401, request=httpx.Request("GET", "https://huggingface.co/x"))
        raise OSError("You are trying to access a gated repo.") from GatedRepoError(
            "gated", response=response
        )

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", refuse)
    with pytest.raises(PermissionError, match=r"meta-llama/Llama-3.1-8B is gated.*hf auth login.*HF_TOKEN"):
        PriceModel(base_model="meta-llama/Llama-3.1-8B").configure_model()


def test_4bit_lora_gradients_match_the_dequantized_model(tiny_llama):
    """bitsandbytes warns that its CPU 4-bit kernel has no registered autograd kernel; check the
    LoRA gradients (which flow back through every 4-bit layer) against a full-precision copy of
    the same, dequantized weights."""
    import bitsandbytes as bnb

    torch.manual_seed(0)
    four = PriceModel(base_model=tiny_llama, lora={"r": 8, "alpha": 16, "dropout": 0.0})
    full = PriceModel(
        base_model=tiny_llama, lora={"r": 8, "alpha": 16, "dropout": 0.0}, quantization={"weights": "none"}
    )
    for m in (four, full):
        m.configure_model()
        m.train()
    ids = torch.randint(0, 200, (2, 12))
    four(ids, labels=ids).loss.backward()  # the first training forward repacks the CPU weights
    four.zero_grad()
    layers = dict(four.named_modules())
    lora = dict(four.named_parameters())
    with torch.no_grad():
        for name, module in full.named_modules():
            if isinstance(layers.get(name), bnb.nn.Linear4bit):
                module.weight.copy_(layers[name](torch.eye(module.in_features)).T)
        for name, p in full.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn_like(p) * 0.1)
                lora[name].copy_(p)
    four(ids, labels=ids).loss.backward()
    full(ids, labels=ids).loss.backward()
    reference = dict(full.named_parameters())
    for name, p in four.named_parameters():
        if "lora_" in name:
            assert torch.allclose(p.grad, reference[name].grad, atol=1e-5), name


@pytest.mark.parametrize("point", ["median", "mean"])
def test_validation_logs_every_read_out_and_val_mae_is_the_chosen_one(tiny_llama, raw_items, tmp_path, point):
    from tests.conftest import cpu_trainer, tiny_datamodule, tiny_model

    module = tiny_model(tiny_llama, read={"point": point})
    data = tiny_datamodule(raw_items, tiny_llama)
    logged = cpu_trainer(tmp_path, [], limit_val_batches=1.0).validate(module, datamodule=data)[0]
    # The same reading, done by hand over the validation split.
    errors = {"median": [], "mean": []}
    module.eval()
    with torch.no_grad():
        for batch in data.val_dataloader():
            for d, truth in zip(
                module.reader.read(module.model, batch["prompt_ids"], batch["prompt_mask"]),
                batch["price"],
                strict=True,
            ):
                for kind in errors:
                    errors[kind].append(abs(d.point(kind) - float(truth)))
    expected = {kind: sum(e) / len(e) for kind, e in errors.items()}
    assert abs(expected["median"] - expected["mean"]) > 0.01  # the two read-outs differ here
    for kind in errors:
        assert logged[f"val_mae_{kind}"] == pytest.approx(expected[kind], rel=1e-5)
    assert logged["val_mae"] == logged[f"val_mae_{point}"]


def loss_and_lora_grads(module, batch, completion_only: bool):
    """The batch's loss and the LoRA gradients, from transformers' own loss over the full logits
    or from pricer's LM head at the completion positions only."""
    module.zero_grad()
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    if completion_only:
        loss_sum, count = module.completion_loss(ids, mask, labels)
        loss = loss_sum / count
    else:
        loss = module(ids, mask, labels).loss
    loss.backward()
    return float(loss), {n: p.grad.clone() for n, p in module.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("quantization", ["4bit", "none"])
def test_completion_logits_give_the_full_logits_loss_and_lora_gradients(tiny_llama, raw_items, quantization):
    from tests.conftest import tiny_datamodule

    module = PriceModel(
        base_model=tiny_llama,
        lora={"r": 8, "alpha": 16, "dropout": 0.0},
        quantization={"weights": quantization},
    )
    module.configure_model()
    with_random_lora(module)
    dm = tiny_datamodule(raw_items, tiny_llama)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert (batch["labels"] != -100).sum() < batch["attention_mask"].sum() / 10  # the price is a few tokens
    full_loss, full = loss_and_lora_grads(module, batch, completion_only=False)
    loss, grads = loss_and_lora_grads(module, batch, completion_only=True)
    assert loss == pytest.approx(full_loss, rel=1e-6)
    assert full.keys() == grads.keys() and max(float(g.abs().max()) for g in full.values()) > 1e-4
    for name in full:
        assert torch.allclose(grads[name], full[name], rtol=1e-4, atol=1e-7), name


def test_training_with_completion_logits_gives_the_same_losses(tiny_llama, raw_items, tmp_path):
    from tests.conftest import Losses, cpu_trainer, tiny_datamodule, tiny_model

    runs = {}
    for completion_logits in (True, False):
        losses = Losses()
        module = tiny_model(tiny_llama, completion_logits=completion_logits, lora={"dropout": 0.0})
        cpu_trainer(tmp_path / str(completion_logits), [losses]).fit(
            module, datamodule=tiny_datamodule(raw_items, tiny_llama)
        )
        runs[completion_logits] = losses.by_step
    assert len(runs[True]) == 8
    assert runs[True] == pytest.approx(runs[False], rel=1e-5)


@pytest.mark.slow
def test_smollm2_completion_logits_match_the_full_logits(gguf, sample, tmp_path):
    from tests.conftest import small_datamodule

    dm = small_datamodule(sample, gguf, tmp_path / "cache", train_size=8, val_size=4, test_size=4)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    module = PriceModel(base_model=str(gguf), lora={"dropout": 0.0})
    module.configure_model()
    with_random_lora(module)
    full_loss, full = loss_and_lora_grads(module, batch, completion_only=False)
    loss, grads = loss_and_lora_grads(module, batch, completion_only=True)
    assert loss == pytest.approx(full_loss, rel=1e-5)
    for name in full:
        scale = float(full[name].abs().max())
        assert float((grads[name] - full[name]).abs().max()) <= 1e-4 * scale + 1e-8, name


@pytest.mark.parametrize("quantization", ["4bit", "none"])
def test_val_loss_comes_from_the_reading_pass_and_equals_a_pass_of_its_own(
    tiny_llama, raw_items, quantization
):
    """read_and_score: the completion rides after the prompt in the reading's forward pass. Its
    distributions are `read`'s, and its loss is `completion_loss`'s over the right-padded
    batch (the old second pass), on every validation batch, with the shared prefix or without."""
    from pricer.base.load import load_tokenizer
    from pricer.data.batches import PadCollator, tokenize_examples
    from pricer.data.prompt import make_prompt
    from tests.conftest import tiny_datamodule

    module = PriceModel(
        base_model=tiny_llama,
        lora={"r": 8, "alpha": 16, "dropout": 0.0},
        quantization={"weights": quantization},
    )
    module.configure_model()
    with_random_lora(module).eval()
    dm = tiny_datamodule(raw_items, tiny_llama)
    dm.setup("fit")
    batches = list(dm.val_dataloader())
    # and prices of 1 to 3 digits in one batch, so the completions are padded on the right
    prompts = [make_prompt(t) for b in batches for t in b["text"]][:3]
    assert len(prompts) == 3
    examples = tokenize_examples(
        {"prompt": prompts, "completion": ["5.00", "123.00", "42.00"][: len(prompts)]},
        load_tokenizer(tiny_llama),
    )
    collate = PadCollator(module.reader.tokenizer.pad_token_id, prompts=True)
    batches.append(
        collate([dict(zip(examples, row, strict=True)) for row in zip(*examples.values(), strict=True)])
    )
    widths = {int(n) for b in batches for n in b["completion_mask"].sum(1)}
    assert len(widths) > 1 and min(widths) >= 4  # "N.00" and longer
    with torch.no_grad():
        for share_prefix, batch in [(share, b) for share in (False, True) for b in batches]:
            module.reader.share_prefix = False
            alone = module.reader.read(module.model, batch["prompt_ids"], batch["prompt_mask"])
            module.reader.share_prefix = share_prefix  # the question once a batch, or in every row
            scored, loss_sum, count = module.reader.read_and_score(
                module.model,
                batch["prompt_ids"],
                batch["prompt_mask"],
                batch["completion_ids"],
                batch["completion_mask"],
            )
            expected_sum, expected_count = module.completion_loss(
                batch["input_ids"], batch["attention_mask"], batch["labels"]
            )
            assert int(count) == int(expected_count) == int(batch["completion_mask"].sum())
            assert float(loss_sum) == pytest.approx(float(expected_sum), rel=1e-5)
            for a, b in zip(alone, scored, strict=True):
                assert a.prices.tolist() == b.prices.tolist()
                assert np.allclose(a.probs, b.probs, rtol=1e-4, atol=1e-9)
                assert a.left_out == pytest.approx(b.left_out, rel=1e-4, abs=1e-9)


def test_under_16_bit_validation_prices_each_item_as_test_does(tiny_llama, tmp_path, monkeypatch):
    """Under bf16-mixed (a 16-bit device, simulated on the CPU) test reads each prompt alone;
    validation, which chooses the best weights and the blend, reads the same prices to the cent
    on the same items, not a padded batch's."""
    from pricer.data.rules import CurationRules
    from tests.conftest import cpu_trainer, record, small_datamodule, trained_like, write_raw

    module = trained_like(tiny_llama)
    # texts of different lengths under the token cut: prompts padded in a batch
    write_raw(
        tmp_path, "Appliances", [record(f"Fridge model {i}", 10.0 + i, words=60 + i) for i in range(50)]
    )
    rules = CurationRules(max_chars=3000, max_tokens=1000)
    data = small_datamodule(
        tmp_path, tiny_llama, tmp_path / "cache", rules=rules, val_size=8, test_size=2, eval_batch_size=4
    )
    trainer = cpu_trainer(tmp_path, [], precision="bf16-mixed", limit_val_batches=1.0, limit_test_batches=1.0)
    widths = []  # the batch of each price read: on the CPU rows round alike, so count the reads
    read = type(module.reader).read

    def spy(self, model, input_ids, attention_mask, layers=0):
        widths.append(len(input_ids))
        return read(self, model, input_ids, attention_mask, layers)

    monkeypatch.setattr(type(module.reader), "read", spy)
    trainer.validate(module, datamodule=data)
    assert widths and set(widths) == {1}  # each prompt alone, as test reads them
    validated = {round(r["price"], 2): round(r["predicted"], 2) for r in module.validation_rows}  # the LLM's
    batch = next(iter(data.val_dataloader()))
    assert len(set(batch["prompt_mask"].sum(1).tolist())) > 1  # prompts of several lengths: padded
    widths.clear()
    trainer.test(module, dataloaders=data.val_dataloader())
    assert widths and set(widths) == {1}  # test under bf16-mixed: each prompt alone too
    tested = {round(r["price"], 2): round(r["llm_predicted"], 2) for r in module.test_rows}
    assert validated == tested and len(tested) == len(module.test_rows)
