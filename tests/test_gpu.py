"""GPU checks: run where CUDA is present (the `device` tool's machine); skipped elsewhere.

Each can fail on a real card: the precision is read from the card's compute capability, fp16
training goes through a real GradScaler and paged AdamW, and the memory budget is asserted on
the allocator's own peak after a search that ran out of memory at least once.
"""

import pytest
import torch

from pricer.batch_size import FitBatchSize, apply_memory_budget
from pricer.precision import default_precision, resolve_dtype
from tests.conftest import cpu_trainer, tiny_datamodule, tiny_model

pytestmark = pytest.mark.gpu

GIB = 2**30


@pytest.fixture(autouse=True)
def whole_card_afterwards():
    yield
    torch.cuda.set_per_process_memory_fraction(1.0, 0)
    torch.cuda.empty_cache()


def test_precision_follows_this_cards_compute_capability():
    native = torch.cuda.get_device_capability(0) >= (8, 0)
    assert default_precision("auto") == ("bf16-mixed" if native else "16-mixed")
    assert resolve_dtype("auto", torch.device("cuda", 0)) == (torch.bfloat16 if native else torch.float16)


def test_fp16_training_uses_the_grad_scaler_and_paged_adamw_and_moves_lora_only(
    tiny_llama, raw_items, tmp_path
):
    """The T4's path on whatever card this is: 16-mixed, fp16 4-bit compute, paged AdamW."""
    import bitsandbytes as bnb

    module = tiny_model(tiny_llama, compute_dtype="float16", learning_rate=1e-2, warmup_ratio=0.0)
    fit = cpu_trainer(tmp_path, [], accelerator="gpu", devices=1, precision="16-mixed", max_steps=3)
    data = tiny_datamodule(raw_items, tiny_llama)
    module.configure_model()
    lora = {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}
    fit.fit(module, datamodule=data)
    scaler = fit.precision_plugin.scaler
    assert isinstance(scaler, torch.amp.GradScaler) and scaler.is_enabled()
    assert scaler._growth_tracker is not None  # update() ran: the scaler took part in the steps
    optimizer = fit.optimizers[0]
    assert isinstance(optimizer, bnb.optim.PagedAdamW) and optimizer.is_paged
    assert optimizer.args.optim_bits == 32
    q_proj = module.model.base_model.model.model.layers[0].self_attn.q_proj
    assert isinstance(q_proj.base_layer, bnb.nn.Linear4bit) and q_proj.base_layer.weight.device.type == "cuda"
    assert q_proj.base_layer.compute_dtype == torch.float16
    moved = max(
        float((p.detach().cpu() - lora[n].cpu()).abs().max())
        for n, p in module.named_parameters()
        if n in lora
    )
    assert moved > 1e-4 and torch.isfinite(fit.callback_metrics["train_loss"])


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
    out-of-memory error, and the allocator's peak in training must stay under the budget."""
    from benchmarks.t4_check import datamodule as synthetic
    from benchmarks.t4_check import synthetic_items, trainer_for, write_random_model
    from pricer.model import PriceModel

    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": 32000,
        "hidden_size": 1024,
        "intermediate_size": 2816,
        "num_hidden_layers": 8,
        "num_attention_heads": 16,
        "num_key_value_heads": 4,
        "max_position_embeddings": 2048,
    }
    device = torch.device("cuda", 0)
    write_random_model(config, tmp_path / "model", device)
    module = PriceModel(
        base_model=str(tmp_path / "model"),
        compute_dtype="float16",
        lora_r=16,
        lora_alpha=32,
        gradient_checkpointing=False,
        completion_logits=False,  # the full logits make memory grow quickly with the pass size
    )
    finder = FitBatchSize(effective_batch_size=64, memory_budget_gib=1.0, max_val=64, steps_per_trial=1)
    items = synthetic_items(64 * 2, 512, 3, config["vocab_size"], seed=0)
    fit = trainer_for(device, 2, [finder], tmp_path)
    fit.fit(module, datamodule=synthetic(items, 64))
    assert False in finder.tried.values(), finder.tried  # the search did run out of memory
    assert finder.tried[finder.found] is True and finder.found < 64
    assert torch.cuda.max_memory_reserved(device) <= 1.0 * GIB
    assert fit.global_step == 2
