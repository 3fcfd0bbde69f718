"""GPU checks: run where CUDA is present (the `device` tool's machine); skipped elsewhere."""

import pytest
import torch

from pricer.batch_size import FitBatchSize, apply_memory_budget
from pricer.precision import default_precision, resolve_dtype
from tests.test_training import datamodule, model, trainer

pytestmark = pytest.mark.gpu


def test_precision_and_compute_dtype_follow_the_card():
    bf16 = torch.cuda.is_bf16_supported()
    assert default_precision("auto") == ("bf16-mixed" if bf16 else "16-mixed")
    assert resolve_dtype("auto", torch.device("cuda")) == (torch.bfloat16 if bf16 else torch.float16)


def test_4bit_lora_trains_on_cuda(tiny_llama, raw_items, tmp_path):
    import bitsandbytes as bnb

    module = model(tiny_llama)
    fit = trainer(
        tmp_path, [], accelerator="gpu", devices=1, precision=default_precision("auto"), max_steps=3
    )
    fit.fit(module, datamodule=datamodule(raw_items, tiny_llama))
    q_proj = module.model.base_model.model.model.layers[0].self_attn.q_proj
    assert isinstance(q_proj.base_layer, bnb.nn.Linear4bit) and q_proj.base_layer.weight.device.type == "cuda"
    assert torch.isfinite(fit.callback_metrics["train_loss"])


def test_the_memory_budget_caps_a_larger_card():
    device = torch.device("cuda", 0)
    total = torch.cuda.get_device_properties(device).total_memory
    fraction = apply_memory_budget(15.0, device)
    assert fraction == pytest.approx(min(1.0, 15 * 2**30 / total))
    if fraction < 1.0:
        with pytest.raises(torch.OutOfMemoryError):
            torch.empty(int(16 * 2**30), dtype=torch.uint8, device=device)
    torch.cuda.set_per_process_memory_fraction(1.0, device)


def test_finder_searches_within_the_budget_on_cuda(tiny_llama, raw_items, tmp_path):
    finder = FitBatchSize(effective_batch_size=8, memory_budget_gib=15.0, max_val=8, steps_per_trial=1)
    fit = trainer(tmp_path, [finder], accelerator="gpu", devices=1, max_steps=2)
    fit.fit(model(tiny_llama), datamodule=datamodule(raw_items, tiny_llama))
    assert finder.found == 8 and not list(tmp_path.rglob(".scale_batch_size_*"))
    torch.cuda.set_per_process_memory_fraction(1.0, 0)
