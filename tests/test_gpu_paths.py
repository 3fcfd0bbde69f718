"""What the GPU job does differently from a CPU run, simulated on the CPU: the end of fit before
Lightning's teardown, the LM head under autocast, gradient checkpointing, and one preparation
of the model for training and every read."""

import warnings

import pytest
import torch
from lightning.pytorch.strategies import SingleDeviceStrategy

from pricer.train.model import PriceModel
from tests.conftest import Losses, cpu_trainer, tiny_datamodule, tiny_model


class RecordingTeardown(SingleDeviceStrategy):
    """The CPU strategy, noting what the run folder holds when Lightning tears down."""

    def __init__(self, adapter):
        super().__init__(device=torch.device("cpu"))
        self.adapter, self.held = adapter, None

    def teardown(self) -> None:
        if self.held is None:
            self.held = sorted(p.name for p in self.adapter.iterdir()) if self.adapter.is_dir() else []
        super().teardown()


def test_the_adapter_recipe_and_blend_are_on_disk_before_teardown_and_the_model_never_moves(
    tiny_llama, raw_items, tmp_path, monkeypatch
):
    """Lightning's teardown (before `on_fit_end`) moves the module to the CPU: on a GPU, the 8B
    base copied into host memory, where a Colab T4 host can run out and lose what fit chose."""
    moved = []
    original = torch.nn.Module.cpu

    def cpu(self):
        if isinstance(self, PriceModel) or self.__class__.__name__ == "PeftModelForCausalLM":
            moved.append(type(self).__name__)
        return original(self)

    monkeypatch.setattr(torch.nn.Module, "cpu", cpu)
    strategy = RecordingTeardown(tmp_path / "adapter")
    module = tiny_model(tiny_llama)
    fit = cpu_trainer(tmp_path, [], max_steps=2, strategy=strategy)
    fit.fit(module, datamodule=tiny_datamodule(raw_items, tiny_llama))
    assert {"adapter_model.safetensors", "adapter_config.json", "pricer.json"} <= set(strategy.held)
    assert any(name.startswith("tfidf") for name in strategy.held), strategy.held  # the blend's partner
    assert moved == []
    fit.test(module, datamodule=tiny_datamodule(raw_items, tiny_llama))
    assert moved == []


def test_the_lm_head_keeps_no_16_bit_copy_of_its_weight_for_backward(tiny_llama, raw_items):
    """Under 16-mixed the head's fp32 weight (peft's upcast) would be cast to 16-bit at every
    pass and kept for backward: 1 GiB for Llama 3's head, to compute a few price rows."""
    module = PriceModel(base_model=tiny_llama, lora={"r": 8, "alpha": 16, "dropout": 0.0})
    module.configure_model()
    head = module.model.get_base_model().get_output_embeddings()
    assert head.weight.dtype == torch.float32
    dm = tiny_datamodule(raw_items, tiny_llama)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    saved = []

    def pack(tensor):
        saved.append((tuple(tensor.shape), tensor.dtype))
        return tensor

    with (
        torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t),
        torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False),
    ):
        loss, count = module.completion_loss(batch["input_ids"], batch["attention_mask"], batch["labels"])
    loss.backward()
    assert count > 0 and torch.isfinite(loss)
    vocab, hidden = head.weight.shape
    assert ((vocab, hidden), torch.bfloat16) not in saved  # autocast saves it as it was cast:
    assert ((hidden, vocab), torch.bfloat16) not in saved  # the weight, or its transpose
    assert any(dtype == torch.bfloat16 for _, dtype in saved)  # the decoder did run under autocast
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters() if p.requires_grad)


def test_gradient_checkpointing_really_runs_in_training_and_is_non_reentrant(
    tiny_llama, raw_items, tmp_path, monkeypatch
):
    """transformers loads the base in eval mode, where it skips checkpointing; and peft's empty
    options would make torch take its reentrant path, with a warning that it becomes an error."""
    import transformers.modeling_utils

    calls = []
    original = transformers.modeling_utils.checkpoint

    def checkpoint(function, *args, **kwargs):
        calls.append(kwargs.get("use_reentrant"))
        return original(function, *args, **kwargs)

    monkeypatch.setattr(transformers.modeling_utils, "checkpoint", checkpoint)
    losses = Losses()
    module = tiny_model(tiny_llama, gradient_checkpointing=True, lora={"dropout": 0.1})
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        cpu_trainer(tmp_path / "checkpointed", [losses], max_steps=2).fit(
            module, datamodule=tiny_datamodule(raw_items, tiny_llama)
        )
    layers = module.model.get_base_model().model.layers
    assert calls and set(calls) == {False}, calls  # every decoder layer of every pass
    assert len(calls) >= 2 * len(layers)
    assert not [w for w in seen if "use_reentrant" in str(w.message)]
    assert not [w for w in seen if "eval mode at the start of training" in str(w.message)]

    plain = Losses()
    cpu_trainer(tmp_path / "plain", [plain], max_steps=2).fit(
        tiny_model(tiny_llama, gradient_checkpointing=False, lora={"dropout": 0.1}),
        datamodule=tiny_datamodule(raw_items, tiny_llama),
    )
    assert losses.by_step == pytest.approx(plain.by_step, rel=1e-5)  # the same training, recomputed


def test_training_and_every_read_prepare_the_base_the_same_way(tiny_llama, tmp_path):
    """A 16-bit compute dtype (a GPU's) on the CPU: fit's test reads the base as peft prepared it
    for training (norms, embeddings and head in fp32); the Space must read the same model."""
    from pricer.read.distribution import PriceReader
    from pricer.read.recipe import Recipe
    from pricer.read.serving import Pricer

    trained = PriceModel(
        base_model=tiny_llama, lora={"r": 8, "alpha": 16}, quantization={"compute_dtype": "bfloat16"}
    )
    trained.configure_model()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in trained.model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.05)
    folder = tmp_path / "adapter"
    trained.model.save_pretrained(folder)

    tested = PriceModel(
        base_model=tiny_llama, adapter=str(folder), quantization={"compute_dtype": "bfloat16"}
    )
    tested.configure_model()
    recipe = Recipe(base_model=tiny_llama, quantization={"compute_dtype": "bfloat16"}, read={"cpu": "4bit"})
    served = Pricer(recipe, str(folder), device="cpu")

    def dtypes(model) -> dict:
        return {n.removeprefix("base_model.model."): p.dtype for n, p in model.named_parameters()}

    assert dtypes(served.model) == dtypes(tested.model)
    assert dtypes(tested.model)["model.norm.weight"] == torch.float32

    tested.model.eval()
    prompt = "How much does this cost to the nearest dollar?\n\nA fridge\n\nPrice is $"
    encoded = served.tokenizer(prompt, return_tensors="pt")
    reader = PriceReader(served.tokenizer)
    with torch.no_grad():
        (test_read,) = reader.read(tested.model, encoded["input_ids"], encoded["attention_mask"])
        (space_read,) = reader.read(served.model, encoded["input_ids"], encoded["attention_mask"])
    assert test_read.prices.tolist() == space_read.prices.tolist()
    assert test_read.probs == pytest.approx(space_read.probs, abs=1e-7)
