"""Training on the CPU with a tiny random Llama in 4-bit: checkpoints, resuming, the adapter."""

from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from pricer.train.model import PriceModel
from tests.conftest import Died, Kill, Losses, cpu_trainer, small_datamodule, tiny_datamodule, tiny_model


def price_loss(module, dm):
    """Mean loss on the validation items' prices, in eval mode."""
    module.eval()
    with torch.no_grad():
        losses = [module(b["input_ids"], b["attention_mask"], b["labels"]).loss for b in dm.val_dataloader()]
    return float(torch.stack(losses).mean())


def test_a_few_steps_lower_the_loss(tiny_llama, raw_items, tmp_path):
    module = tiny_model(
        tiny_llama, optimizer={"learning_rate": 1e-2, "warmup_ratio": 0.0}, lora={"dropout": 0.0}
    )
    dm = tiny_datamodule(raw_items, tiny_llama)
    dm.prepare_data()
    dm.setup("fit")
    module.configure_model()
    before = price_loss(module, dm)
    cpu_trainer(tmp_path, [], max_epochs=3).fit(module, datamodule=dm)
    after = price_loss(module, dm)
    assert after < before * 0.9, (before, after)


def test_checkpoint_holds_lora_weights_optimizer_loops_and_rng_only(tiny_llama, raw_items, tmp_path):
    module = tiny_model(tiny_llama)
    cpu_trainer(tmp_path, [], every=2, max_steps=2).fit(
        module, datamodule=tiny_datamodule(raw_items, tiny_llama)
    )
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert set(checkpoint["state_dict"]) == module.trainable_names()
    assert all("lora_" in k for k in checkpoint["state_dict"])
    assert {"optimizer_states", "lr_schedulers", "loops", "pricer_rng"} <= set(checkpoint)
    # the fit loop kept the data loader's place in the epoch
    assert "combined_loader" in checkpoint["loops"]["fit_loop"]["state_dict"]


def test_kill_mid_epoch_and_resume_gives_the_same_following_losses(tiny_llama, raw_items, tmp_path):
    whole = Losses()
    cpu_trainer(tmp_path / "whole", [whole]).fit(
        tiny_model(tiny_llama), datamodule=tiny_datamodule(raw_items, tiny_llama)
    )
    assert len(whole.by_step) == 8  # 32 items, batches of 4, one epoch

    first = Losses()
    with pytest.raises(Died):
        cpu_trainer(tmp_path / "killed", [first, Kill(step=5)], every=3).fit(
            tiny_model(tiny_llama), datamodule=tiny_datamodule(raw_items, tiny_llama)
        )
    assert max(first.by_step) == 5  # it died during step 6; the last checkpoint is step 3

    resumed = Losses()
    fresh = tiny_model(tiny_llama)
    torch.manual_seed(1234)  # a new process has another random state; the checkpoint restores it
    cpu_trainer(tmp_path / "killed", [resumed], every=3).fit(
        fresh,
        datamodule=tiny_datamodule(raw_items, tiny_llama),
        ckpt_path=str(tmp_path / "killed" / "checkpoints" / "last.ckpt"),
    )
    assert sorted(resumed.by_step) == [4, 5, 6, 7, 8]
    for step, loss in resumed.by_step.items():
        assert loss == pytest.approx(whole.by_step[step], rel=1e-5, abs=1e-6), step


def test_the_adapter_loads_back_onto_the_base(tiny_llama, raw_items, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    module = tiny_model(tiny_llama, quantization={"weights": "none"}, lora={"dropout": 0.0})
    cpu_trainer(tmp_path, [], max_steps=3).fit(module, datamodule=tiny_datamodule(raw_items, tiny_llama))
    adapter = Path(tmp_path) / "adapter"
    assert (adapter / "adapter_model.safetensors").is_file() and (adapter / "adapter_config.json").is_file()
    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), adapter).eval()
    module.eval()
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        assert torch.allclose(loaded(ids).logits, module(ids).logits, atol=1e-5)


def test_a_nan_loss_stops_naming_the_step(tiny_llama, raw_items, tmp_path):
    class Poison(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == 2:
                with torch.no_grad():
                    next(p for n, p in pl_module.named_parameters() if "lora_B" in n).fill_(float("nan"))

    with pytest.raises(FloatingPointError, match="loss is nan at global step 2"):
        cpu_trainer(tmp_path, [Poison()], every=1).fit(
            tiny_model(tiny_llama), datamodule=tiny_datamodule(raw_items, tiny_llama)
        )
    good = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert good["global_step"] == 2
    assert all(torch.isfinite(v).all() for v in good["state_dict"].values())


@pytest.mark.slow
def test_smollm2_fine_tunes_on_real_items(gguf, sample, tmp_path):
    """The real path: SmolLM2-135M from its GGUF, in 4-bit with LoRA, on real Appliances items."""
    dm = small_datamodule(sample, gguf, tmp_path / "cache", train_size=48, val_size=8, test_size=8)
    dm.prepare_data()
    dm.setup("fit")
    module = PriceModel(
        base_model=str(gguf), optimizer={"learning_rate": 1e-3, "warmup_ratio": 0.0}, lora={"dropout": 0.0}
    )
    module.configure_model()
    before = price_loss(module, dm)
    cpu_trainer(tmp_path, []).fit(module, datamodule=dm)  # one epoch: 12 steps
    after = price_loss(module, dm)
    assert after < before * 0.8, (before, after)


class Validations(Callback):
    """val_mae and the LoRA weights after each validation, by step; the final step's weights."""

    def __init__(self):
        self.by_step, self.final = {}, None

    def on_validation_end(self, trainer, pl_module):
        weights = {k: v.detach().clone() for k, v in pl_module.named_parameters() if v.requires_grad}
        self.by_step[trainer.global_step] = (float(trainer.callback_metrics["val_mae"]), weights)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.final = {k: v.detach().clone() for k, v in pl_module.named_parameters() if v.requires_grad}


def test_fit_keeps_the_best_weights_on_validation_and_last_ckpt_for_resuming(
    tiny_llama, raw_items, tmp_path, capsys
):
    from lightning.pytorch.callbacks import ModelCheckpoint

    module = tiny_model(
        tiny_llama, optimizer={"learning_rate": 0.3, "warmup_ratio": 0.0}
    )  # wild: val_mae wanders
    seen = Validations()
    best = ModelCheckpoint(dirpath=tmp_path / "checkpoints", monitor="val_mae", mode="min", save_top_k=1)
    trainer = cpu_trainer(
        tmp_path, [seen, best], every=8, limit_val_batches=1, val_check_interval=2, max_steps=8
    )
    trainer.fit(module, datamodule=tiny_datamodule(raw_items, tiny_llama))
    step, (score, weights) = min(seen.by_step.items(), key=lambda item: item[1][0])
    assert step != 8, "the test needs a run whose best validation is not its last step"
    assert module.weights_from == {
        "step": step,
        "chosen_by": "val_mae",
        "val_mae": pytest.approx(score),
        "checkpoint": Path(best.best_model_path).name,
    }
    trained = {k: v for k, v in module.named_parameters() if v.requires_grad}
    assert all(torch.equal(trained[k], weights[k]) for k in weights)
    assert not all(torch.equal(trained[k], seen.final[k]) for k in weights)
    assert f"val_mae ${score:.2f} at step {step} of 8" in capsys.readouterr().out
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 8
    assert all(torch.equal(last["state_dict"][k], seen.final[k]) for k in weights)
    from peft import PeftModel  # noqa: F401  (the saved adapter is the best weights too)
    from safetensors.torch import load_file

    saved = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    assert len(saved) == len(weights)
    for name, tensor in saved.items():
        match = [
            k for k in weights if k.replace(".default", "").endswith(name.removeprefix("base_model.model."))
        ]
        assert len(match) == 1 and torch.equal(tensor, weights[match[0]])


def test_the_blend_is_chosen_on_the_kept_weights_reads_and_a_second_pass_reads_the_same(
    tiny_llama, raw_items, tmp_path, capsys
):
    """fit chooses the blend on the validation reads of the step whose weights it keeps (no
    extra pass); a run resumed past that step has no such reads and reads validation again:
    the same prices, so the same choice."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    from pricer.train import end_of_fit

    module = tiny_model(tiny_llama, optimizer={"learning_rate": 0.3, "warmup_ratio": 0.0})
    best = ModelCheckpoint(dirpath=tmp_path / "checkpoints", monitor="val_mae", mode="min", save_top_k=1)
    trainer = cpu_trainer(tmp_path, [best], every=8, limit_val_batches=1, val_check_interval=2, max_steps=8)
    reads = []
    original = end_of_fit.read_validation
    end_of_fit.read_validation = lambda *args: reads.append(1) or original(*args)
    try:
        trainer.fit(module, datamodule=tiny_datamodule(raw_items, tiny_llama))
        assert reads == [], "the kept step's validation reads are used, not a second pass"
        chosen, report = module.blend, module.blend_report
        assert report["validation"]["n"] == 4 and report["validation"]["tfidf_mae"] is not None
        assert "fit: validation MAE $" in capsys.readouterr().out
        chooser = next(c for c in trainer.callbacks if isinstance(c, end_of_fit.ChooseBlend))
        chooser.choose(trainer, module, module.weights_from["step"])  # as a resumed run: nothing kept
        assert reads == [1]
    finally:
        end_of_fit.read_validation = original
    assert (module.blend, module.blend_report) == (chosen, report)
    assert module.model.training, "training mode is back after the extra pass"
