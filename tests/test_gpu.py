"""GPU checks: run where CUDA is present (the `device` tool's machine); skipped elsewhere.

Each can fail on a real card: the precision is checked against the card's name, fp16 training
loads the 4-bit model inside `fit` on the card and goes through a real GradScaler whose scale
must move and a paged AdamW whose buffers must really be paged, the frozen 4-bit base must not
change while LoRA does, and the memory budget is asserted on the allocator's own peak after a
search that ran out of memory at least once and whose trials' peak was reset.
"""

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from pricer.base.precision import default_precision, resolve_dtype
from pricer.train.batch_size import FitBatchSize, apply_memory_budget

pytestmark = pytest.mark.gpu

GIB = 2**30

# Cards by name: what pricer must train them in (fp16 below compute capability 8.0).
KNOWN_CARDS = {
    "T4": "16-mixed",
    "V100": "16-mixed",
    "P100": "16-mixed",
    "A100": "bf16-mixed",
    "A10": "bf16-mixed",
    "L40": "bf16-mixed",
    "L4": "bf16-mixed",
    "H100": "bf16-mixed",
    "H200": "bf16-mixed",
    "B200": "bf16-mixed",
}


@pytest.fixture(autouse=True)
def whole_card_afterwards():
    yield
    torch.cuda.set_per_process_memory_fraction(1.0, 0)
    torch.cuda.empty_cache()


def midsize_llama(folder, hidden=1024, layers=4, vocab=32000) -> str:
    """A random Llama large enough that its LoRA weights (r 128: 131,072 a matrix) are paged
    by bitsandbytes (it pages tensors of 100,000 elements or more)."""
    from benchmarks.t4_check import write_random_model

    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": hidden * 2,
        "num_hidden_layers": layers,
        "num_attention_heads": 16,
        "num_key_value_heads": 4,
        "max_position_embeddings": 2048,
        "tie_word_embeddings": False,
    }
    write_random_model(config, folder, torch.device("cuda", 0))
    return str(folder)


def test_precision_follows_this_cards_name():
    name = torch.cuda.get_device_name(0)
    known = [card for card in KNOWN_CARDS if card in name.replace("-", " ").split() or card in name]
    if not known:
        pytest.skip(f"{name} is not in the known card list")
    expected = KNOWN_CARDS[max(known, key=len)]
    assert default_precision("auto") == expected, name
    dtype = torch.float16 if expected == "16-mixed" else torch.bfloat16
    assert resolve_dtype("auto", torch.device("cuda", 0)) == dtype


class Watch(Callback):
    """Copies, on the host, of a frozen 4-bit weight and the LoRA weights when training starts,
    compared when it ends; the allocator's peak right after the search."""

    def on_train_start(self, trainer, pl_module):
        named = dict(pl_module.named_parameters())
        self.base_name = next(n for n in named if "q_proj.base_layer.weight" in n)
        self.base = named[self.base_name].detach().to("cpu", copy=True)
        self.lora = {n: p.detach().to("cpu", copy=True) for n, p in named.items() if p.requires_grad}
        device = pl_module.target_device
        self.peak_after_search = torch.cuda.max_memory_allocated(device)
        self.allocated_after_search = torch.cuda.memory_allocated(device)

    def on_train_end(self, trainer, pl_module):
        named = dict(pl_module.named_parameters())
        self.base_unchanged = torch.equal(named[self.base_name].detach().cpu(), self.base)
        self.lora_moved = max(float((named[n].detach().cpu() - w).abs().max()) for n, w in self.lora.items())


def test_fp16_training_loads_on_the_card_scales_and_pages_and_moves_lora_only(
    raw_items, tmp_path, byte_tokenizer
):
    """The T4's path on whatever card this is: the model loaded by fit itself on the card,
    16-mixed with fp16 4-bit compute, a GradScaler that takes part, paged AdamW."""
    import bitsandbytes as bnb
    from lightning.pytorch.plugins.precision import MixedPrecision

    from pricer.train.model import PriceModel
    from tests.conftest import cpu_trainer, small_datamodule

    base = midsize_llama(tmp_path / "model", vocab=300)
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(byte_tokenizer).save_pretrained(base)
    module = PriceModel(
        base_model=base,
        quantization={"compute_dtype": "float16"},
        lora={"r": 128, "alpha": 256},
        optimizer={"learning_rate": 1e-3, "warmup_ratio": 0.0},
    )
    assert module.model is None  # nothing loaded before fit: fit loads it, on the card
    scaler = torch.amp.GradScaler("cuda", init_scale=2.0**16, growth_interval=1)
    watch = Watch()
    fit = cpu_trainer(
        tmp_path,
        [watch],
        accelerator="gpu",
        devices=1,
        plugins=[MixedPrecision("16-mixed", "cuda", scaler=scaler)],
        max_steps=3,
    )
    fit.fit(module, datamodule=small_datamodule(raw_items, base, tmp_path / "cache"))
    assert scaler.is_enabled() and scaler.get_scale() != 2.0**16  # update() ran and moved it
    optimizer = fit.optimizers[0]
    assert isinstance(optimizer, bnb.optim.PagedAdamW) and optimizer.is_paged
    assert optimizer.args.optim_bits == 32
    paged = {id(t) for t in optimizer.page_mng.paged_tensors}
    big = [p for p in module.parameters() if p.requires_grad and p.numel() >= 1e5]
    assert big and all(id(optimizer.state[p]["state1"]) in paged for p in big)
    q_proj = module.model.base_model.model.model.layers[0].self_attn.q_proj
    assert isinstance(q_proj.base_layer, bnb.nn.Linear4bit) and q_proj.base_layer.weight.device.type == "cuda"
    assert q_proj.base_layer.compute_dtype == torch.float16
    assert watch.base_unchanged, "the frozen 4-bit base changed in training"
    assert watch.lora_moved > 1e-5
    assert torch.isfinite(fit.callback_metrics["train_loss"])


def test_the_memory_budget_caps_a_larger_card():
    device = torch.device("cuda", 0)
    total = torch.cuda.get_device_properties(device).total_memory
    fraction = apply_memory_budget(14.0, device)
    assert fraction == pytest.approx(min(1.0, 14 * GIB / total))
    if fraction < 1.0:
        with pytest.raises(torch.cuda.OutOfMemoryError):
            torch.empty(int(15 * GIB), dtype=torch.uint8, device=device)


def test_the_search_runs_out_of_memory_and_training_stays_under_the_budget(tmp_path):
    """A mid-sized Llama with long sequences against a 1 GiB budget: the search must meet a real
    out-of-memory error, its trials' peak must be reset before training, and the allocator's
    peak in training must stay under the budget."""
    from benchmarks.t4_check import datamodule as synthetic
    from benchmarks.t4_check import synthetic_items, trainer_for
    from pricer.train.model import PriceModel

    base = midsize_llama(tmp_path / "model", layers=8)
    device = torch.device("cuda", 0)
    module = PriceModel(
        base_model=base,
        quantization={"compute_dtype": "float16"},
        lora={"r": 16, "alpha": 32},
        gradient_checkpointing=False,
        completion_logits=False,  # the full logits make memory grow quickly with the pass size
    )
    finder = FitBatchSize(effective_batch_size=64, memory_budget_gib=1.0, max_val=64, steps_per_trial=1)
    watch = Watch()
    items = synthetic_items(64 * 2, 512, 3, 32000, seed=0)
    fit = trainer_for(device, 2, [finder, watch], tmp_path)
    fit.fit(module, datamodule=synthetic(items, 64))
    assert False in finder.tried.values(), finder.tried  # the search did run out of memory
    assert finder.tried[finder.found] is True and finder.found < 64
    assert watch.peak_after_search <= watch.allocated_after_search + 64 * 2**20  # the trials' peak is gone
    assert torch.cuda.max_memory_reserved(device) <= 1.0 * GIB
    assert fit.global_step == 2
