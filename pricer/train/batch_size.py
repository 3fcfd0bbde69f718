"""The largest batch that really fits a T4's memory, found once before fit, and kept.

A training step is one optimizer step over `data.batch_size` items per process, accumulated in
passes of `model.micro_batch_size` items (see `PriceModel.accumulate_gradients`). The search
below tries pass sizes that divide the step's items, each with real training steps (forward,
backward, clipping, the optimizer's step) on the longest training sequence, and returns the
largest whose trial completed: never a size it did not run. (Lightning's BatchSizeFinder
returns its cap untried when the last doubling reaches it, and only scales the loader's batch.)
"""

from __future__ import annotations

import copy
import gc
from collections.abc import Callable, Sequence
from typing import Literal

import lightning as L
import torch
from jsonargparse.typing import PositiveFloat, PositiveInt
from lightning.pytorch.callbacks import Callback

from pricer.library_internals import forget_scaler_step, rebuild_fit_loaders
from pricer.train import rng
from pricer.train.paged_state import is_paged_optimizer, restore_in_place

GIB = 2**30

# What a 16 GB T4 gives one training process, so a search on any card finds what a T4 fits:
#   14.75 GiB  what a T4 reports as its memory (cudaDeviceProp.totalGlobalMem, which
#              torch.cuda.get_device_properties().total_memory reads; NVIDIA/DALI#1813 shows a
#              T4's "deviceMemorySize: 14.75GiB")
#  - 0.40 GiB  the CUDA context, outside torch's allocator (about 400 MB since CUDA 11.7's lazy
#              kernel loading, pytorch/pytorch#109888), with the kernels loaded as training runs
#  - 0.20 GiB  paged AdamW's state for the 8B job's 27.3M LoRA weights (two fp32 moments), which
#              bitsandbytes allocates as CUDA managed memory, also outside torch's allocator
#  - 0.15 GiB  slack for fragmentation between trial and training steps
#  = 14.0 GiB  the cap on torch's allocator, as a fraction of whatever card this runs on.
T4_BUDGET_GIB = 14.0


def apply_memory_budget(budget_gib: float | None, device: torch.device) -> float | None:
    """Cap this process's share of the GPU at the budget; returns the fraction set (or None).

    Applied on every card, a T4 included: on a larger card (an 80 GB H100 emulating a T4) the
    search then finds what the T4 would fit, and on the T4 itself the cap leaves room for what
    torch's allocator does not count. The CPU has no such cap.
    """
    if budget_gib is None or device.type != "cuda":
        return None
    total = torch.cuda.get_device_properties(device).total_memory
    fraction = min(1.0, budget_gib * GIB / total)
    torch.cuda.set_per_process_memory_fraction(fraction, device)
    return fraction


def per_process_batch(effective: int, world_size: int = 1) -> int:
    """Items each process takes per optimizer step."""
    per_process = effective // world_size
    if per_process < 1 or per_process * world_size != effective:
        raise ValueError(f"effective_batch_size {effective} is not a multiple of the {world_size} processes")
    return per_process


def pass_sizes(items: int, largest: int | None = None) -> list[int]:
    """The pass sizes a step of `items` can use (they divide it), at most `largest`, ascending."""
    return [d for d in range(1, items + 1) if items % d == 0 and (largest is None or d <= largest)]


def smaller_micro_batch(items: int, micro: int) -> int | None:
    """After running out of memory with `micro` items a pass: the largest size at most half of
    it that divides the step's items, or None when one item a pass already failed."""
    fitting = pass_sizes(items, micro // 2)
    return fitting[-1] if fitting else None


def split_effective_batch(effective: int, largest: int, world_size: int = 1) -> tuple[int, int]:
    """(items a pass, passes a step) whose product with the world size is the effective batch:
    the largest pass size at most `largest` that divides each process's share."""
    per_process = per_process_batch(effective, world_size)
    micro = pass_sizes(per_process, largest)[-1]
    return micro, per_process // micro


class BatchSearchOutOfMemory(torch.cuda.OutOfMemoryError):
    """Not even the smallest size fits the budget."""


def largest_that_fits(
    sizes: Sequence[int],
    fits: Callable[[int], bool],
    mode: Literal["power", "binsearch"] = "binsearch",
    start: int = 1,
) -> tuple[int, dict[int, bool]]:
    """The largest of `sizes` for which `fits` returned True, and every size tried.

    Doubles from `start` (the next size at least twice the last that fit), so the largest size,
    the cap, is tried like any other; after the first failure, `binsearch` narrows down between
    the last fit and the failure, `power` stops. When `start` fails, smaller sizes are tried
    downwards. Only sizes that ran and fit are ever returned.
    """
    sizes = sorted(set(sizes))
    if not sizes:
        raise ValueError("no batch size to try")
    tried: dict[int, bool] = {}

    def attempt(size: int) -> bool:
        tried[size] = fits(size)
        return tried[size]

    good: int | None = None
    bad: int | None = None
    size = next((s for s in sizes if s >= start), sizes[-1])
    while True:
        if not attempt(size):
            bad = size
            break
        good = size
        bigger = [s for s in sizes if s > size]
        if not bigger:
            break
        size = next((s for s in bigger if s >= 2 * size), bigger[-1])
    if good is None:
        for size in reversed([s for s in sizes if s < bad]):
            if attempt(size):
                good = size
                break
    elif bad is not None and mode == "binsearch":
        between = [s for s in sizes if good < s < bad]
        while between:
            middle = between[len(between) // 2]
            if attempt(middle):
                good = middle
                between = [s for s in between if s > middle]
            else:
                between = [s for s in between if s < middle]
    if good is None:
        raise BatchSearchOutOfMemory(f"no batch size fits the memory budget: tried {sorted(tried)}")
    return good, tried


class _Snapshot:
    """What trial steps change, put back afterwards: LoRA weights, optimizer and GradScaler
    state, random state. A run after the search is the run it would have been without it."""

    def __init__(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.module = module
        self.optimizers = trainer.strategy.optimizers
        self.scaler = getattr(trainer.precision_plugin, "scaler", None)
        self.weights = {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}
        self.optimizer_states = [copy.deepcopy(o.state_dict()) for o in self.optimizers]
        self.scaler_state = copy.deepcopy(self.scaler.state_dict()) if self.scaler is not None else None
        self.random = rng.capture()

    def restore(self) -> None:
        with torch.no_grad():
            for name, p in self.module.named_parameters():
                if name in self.weights:
                    p.copy_(self.weights[name])
                p.grad = None
        for optimizer, state in zip(self.optimizers, self.optimizer_states, strict=True):
            if is_paged_optimizer(optimizer):
                restore_in_place(optimizer, state)  # its paged buffers are never freed: reuse them
            else:
                optimizer.load_state_dict(state)
        if self.scaler is not None:
            self.scaler.load_state_dict(self.scaler_state)
            reset_scaler_step(self.scaler)
        rng.restore(self.random)


def free_memory() -> None:
    """Give the memory of a pass that ran out of it back to the card. Called outside the `except`
    block that caught the error: inside it, the traceback still holds the failed pass's frames and
    their activations, which neither `gc.collect()` nor `empty_cache()` can then release."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def reset_scaler_step(scaler) -> None:
    """Forget a GradScaler's record of an optimizer step that did not finish. A step that ran out
    of memory after `unscale_` (in the clipping, or in the optimizer's own step) leaves it marked
    unscaled, and the next step's `unscale_` would raise "unscale_() has already been called";
    `GradScaler.update()` clears it the same way after every finished step."""
    forget_scaler_step(scaler)


class FitBatchSize(Callback):
    """Find the largest batch that fits the memory budget, once, before fit.

    Each optimizer step takes `effective_batch_size` items (split across processes); the
    search finds how many of them one forward and backward pass can take, trying only sizes
    that divide a process's share, each with real training steps on the longest training
    sequence, and keeps the largest whose trial completed. The rest of the step is gradient
    accumulation. The result is kept in checkpoints, so a resumed run keeps the same batch; a
    later step that still runs out of memory is repeated with half as many items a pass.

    Args:
        effective_batch_size: Items per optimizer step, across accumulation and processes.
        memory_budget_gib: GPU memory the search and training may use; the default, 14.0 GiB,
            is what a 16 GB T4 gives a process (see T4_BUDGET_GIB), applied on every card so a
            larger one finds what a T4 fits; null for the whole card. Ignored on the CPU.
        max_val: Largest pass size tried (also capped at a process's share of the step).
        init_val: First pass size tried.
        steps_per_trial: Training steps run at each size.
        mode: binsearch (double until a size fails, then narrow down between) or power (stop at
            the first failure).
    """

    def __init__(
        self,
        effective_batch_size: PositiveInt = 16,
        memory_budget_gib: PositiveFloat | None = T4_BUDGET_GIB,
        max_val: PositiveInt = 64,
        init_val: PositiveInt = 1,
        steps_per_trial: PositiveInt = 3,
        mode: Literal["power", "binsearch"] = "binsearch",
    ) -> None:
        # the ranges are checked when a config is parsed; kept as plain numbers (checkpoints)
        self.effective_batch_size = int(effective_batch_size)
        self.memory_budget_gib = None if memory_budget_gib is None else float(memory_budget_gib)
        self.max_val = int(max_val)
        self.init_val = int(init_val)
        self.steps_per_trial = int(steps_per_trial)
        self.mode = mode
        self.found: int | None = None
        self.tried: dict[int, bool] = {}
        self.batch_size: int | None = None
        self.accumulation: int | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        apply_memory_budget(self.memory_budget_gib, trainer.strategy.root_device)
        datamodule = trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "batch_size"):
            raise ValueError("FitBatchSize needs a datamodule with a batch_size (pricer's PriceDataModule)")
        per_process = per_process_batch(self.effective_batch_size, trainer.world_size)
        configured = datamodule.batch_size
        datamodule.batch_size = per_process  # the loader yields whole optimizer steps
        sizes = pass_sizes(per_process, self.max_val)
        if getattr(pl_module, "micro_batch_size_restored", False):
            micro = pl_module.micro_batch_size  # a resumed run keeps its pass size, halved or not
        elif self.found is not None:
            micro = self.found
        elif trainer.world_size > 1:
            # Trials on several processes would have to fail together; keep the configured
            # pass size (model.micro_batch_size, else data.batch_size) instead.
            self.found = pl_module.micro_batch_size or configured
            micro = self.found
        else:
            self.found, self.tried = self.search(trainer, pl_module, sizes)
            micro = self.found
        self.batch_size, self.accumulation = split_effective_batch(
            self.effective_batch_size, min(micro, self.max_val), trainer.world_size
        )
        pl_module.micro_batch_size = self.batch_size
        rebuild_fit_loaders(trainer)  # the loaders are made again with the new size
        for logger in trainer.loggers:  # W&B shows the batch the run trained with
            logger.log_hyperparams(
                {
                    "batch": {
                        "items_per_step": self.effective_batch_size,
                        "items_per_pass": self.batch_size,
                        "passes_per_step": self.accumulation,
                        "processes": trainer.world_size,
                        "search_found": self.found,
                        "memory_budget_gib": self.memory_budget_gib,
                    }
                }
            )
        tried = ", ".join(f"{s} {'fits' if ok else 'out of memory'}" for s, ok in sorted(self.tried.items()))
        print(
            f"batch size: {self.batch_size} x {self.accumulation} accumulation"
            f" x {trainer.world_size} process(es) = {self.effective_batch_size} per optimizer step"
            f" (search found {self.found}{'; tried ' + tried if tried else ''})",
            flush=True,
        )

    def search(
        self, trainer: L.Trainer, module: L.LightningModule, sizes: list[int]
    ) -> tuple[int, dict[int, bool]]:
        """Trial steps at each size tried; everything they change is put back afterwards."""
        snapshot = _Snapshot(trainer, module)
        try:
            return largest_that_fits(
                sizes, lambda size: self._fits(trainer, module, size), self.mode, start=self.init_val
            )
        finally:
            snapshot.restore()
            free_memory()
            device = trainer.strategy.root_device
            if device.type == "cuda":  # the training's peak, not the trials'
                torch.cuda.reset_peak_memory_stats(device)

    def _fits(self, trainer: L.Trainer, module: L.LightningModule, size: int) -> bool:
        batch = trainer.strategy.batch_to_device(trainer.datamodule.trial_batch(size))
        precision = trainer.precision_plugin
        optimizer = trainer.strategy.optimizers[0]
        fitted = True
        try:
            for _ in range(self.steps_per_trial):
                with precision.train_step_context():
                    precision.optimizer_step(
                        optimizer, module, lambda: module.accumulate_gradients(batch, size, recover=False)
                    )
                optimizer.zero_grad(set_to_none=True)
        except torch.cuda.OutOfMemoryError:
            fitted = False
        if not fitted:  # out of the except block, so the failed pass is gone before freeing
            optimizer.zero_grad(set_to_none=True)
            scaler = getattr(precision, "scaler", None)
            if scaler is not None:
                reset_scaler_step(scaler)
            free_memory()
        return fitted

    def state_dict(self) -> dict:
        return {"found": self.found}

    def load_state_dict(self, state_dict: dict) -> None:
        self.found = state_dict.get("found")
