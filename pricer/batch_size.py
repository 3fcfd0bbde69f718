"""A batch size that fits the GPU's memory budget, found once before fit.

Lightning's BatchSizeFinder fails on a 4-bit model out of the box: it saves a full checkpoint
and cannot load the quantized weights back, leaving a stray `.scale_batch_size_*.ckpt`.
pricer's checkpoints hold the LoRA weights only and load non-strictly, which makes it work.
"""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import BatchSizeFinder
from lightning.pytorch.utilities.parsing import lightning_getattr, lightning_setattr

GIB = 2**30


def apply_memory_budget(budget_gib: float | None, device: torch.device) -> float | None:
    """Cap this process's share of the GPU at the budget; returns the fraction set (or None).

    On a card larger than the budget (an 80 GB H100 emulating a 16 GB T4) the search then finds
    what fits the budget, not the whole card. The CPU has no such cap.
    """
    if budget_gib is None or device.type != "cuda":
        return None
    total = torch.cuda.get_device_properties(device).total_memory
    fraction = min(1.0, budget_gib * GIB / total)
    torch.cuda.set_per_process_memory_fraction(fraction, device)
    return fraction


def split_effective_batch(effective: int, largest: int, world_size: int = 1) -> tuple[int, int]:
    """(batch size, accumulation) whose product with the world size is the effective batch.

    The batch is the largest that fits (at most `largest`) and divides the effective batch per
    process, so the optimizer always sees the configured number of items per step.
    """
    per_process = effective // world_size
    if per_process < 1 or per_process * world_size != effective:
        raise ValueError(f"effective_batch_size {effective} is not a multiple of the {world_size} processes")
    batch = max(b for b in range(1, min(largest, per_process) + 1) if per_process % b == 0)
    return batch, per_process // batch


class FitBatchSize(BatchSizeFinder):
    """Find the largest batch that fits the memory budget, once, before fit.

    The search runs at the start of `fit` only (not again at validate, test or predict), is
    bounded by `max_val`, and is remembered in checkpoints so a resumed run keeps the same batch.
    Gradient accumulation then keeps the effective batch size at the configured value whatever
    batch size the search finds.

    Args:
        effective_batch_size: Items per optimizer step, across accumulation and processes.
        memory_budget_gib: GPU memory the search may use (15 GiB: a 16 GB T4); null for the
            whole card. Ignored on the CPU, where nothing stops the search but `max_val`.
        max_val: Largest batch size tried (also capped at the effective batch size).
        init_val: First batch size tried.
        steps_per_trial: Training steps run at each size.
        mode: power (double until it fails) or binsearch (then narrow down).
    """

    def __init__(
        self,
        effective_batch_size: int = 16,
        memory_budget_gib: float | None = 15.0,
        max_val: int = 64,
        init_val: int = 1,
        steps_per_trial: int = 3,
        mode: str = "power",
    ) -> None:
        if effective_batch_size < 1:
            raise ValueError(f"effective_batch_size must be positive, got {effective_batch_size}")
        super().__init__(
            mode=mode,
            steps_per_trial=steps_per_trial,
            init_val=init_val,
            max_val=min(max_val, effective_batch_size),
        )
        self.effective_batch_size = effective_batch_size
        self.memory_budget_gib = memory_budget_gib
        self.found: int | None = None
        self.batch_size: int | None = None
        self.accumulation: int | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str | None = None) -> None:
        if stage != "fit":
            return  # searches before fit only
        if trainer._accelerator_connector.is_distributed:
            # Lightning cannot search under DDP; keep the configured batch, still split the
            # effective batch across the processes.
            if self.found is None:
                self.found = int(lightning_getattr(pl_module, self._batch_arg_name))
            return
        super().setup(trainer, pl_module, stage)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        apply_memory_budget(self.memory_budget_gib, trainer.strategy.root_device)
        if self.found is None:  # a resumed run keeps the batch it was trained with
            self.scale_batch_size(trainer, pl_module)
            self.found = int(lightning_getattr(pl_module, self._batch_arg_name))
        self.batch_size, self.accumulation = split_effective_batch(
            self.effective_batch_size, self.found, trainer.world_size
        )
        lightning_setattr(pl_module, self._batch_arg_name, self.batch_size)
        trainer.accumulate_grad_batches = self.accumulation
        # the loaders are made again with the batch size chosen here
        trainer.fit_loop._combined_loader = None
        print(
            f"batch size: {self.batch_size} x {self.accumulation} accumulation"
            f" x {trainer.world_size} process(es) = {self.effective_batch_size} per optimizer step"
            f" (search found {self.found})"
        )

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        return

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        return

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        return

    def state_dict(self) -> dict:
        return {"found": self.found}

    def load_state_dict(self, state_dict: dict) -> None:
        self.found = state_dict.get("found")
