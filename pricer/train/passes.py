"""A training step's forward and backward passes, with the out-of-memory retry: the gradients of
a step's items are accumulated in passes of `micro_batch_size`, and a pass that runs out of GPU
memory repeats the step with half as many items a pass (Lightning's own accumulation cannot
retry a step without skipping or repeating an item).

Two mechanisms for memory, each for what the other cannot do: the batch-size search
(`batch_size.py`) finds the largest pass that fits before fit, on one process; a run on several
processes keeps its configured pass size, and a pass that later runs out of memory (a longer
batch than the trials', fragmentation) is retried here instead of ending the run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from pricer.data.batches import IGNORE_INDEX
from pricer.train.batch_size import free_memory, smaller_micro_batch


@dataclass
class Processes:
    """The processes a step's gradients are summed over: one, or a distributed run's
    (`strategy` is the trainer's; `world_size` 1 makes every method a no-op)."""

    strategy: object = None
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @classmethod
    def of(cls, trainer, device: torch.device) -> Processes:
        if trainer is None or trainer.world_size == 1:
            return cls(device=device)
        return cls(trainer.strategy, trainer.world_size, device)

    def no_sync(self):
        """No gradient synchronisation in a pass's backward (DDP's `no_sync`)."""
        block = getattr(self.strategy, "block_backward_sync", None) if self.world_size > 1 else None
        return block() if block is not None else contextlib.nullcontext()

    def any(self, failed: bool) -> bool:
        """Whether this process or any other ran out of memory in this step's passes."""
        if self.world_size == 1:
            return failed
        flag = torch.tensor(float(failed), device=self.device)
        return bool(self.strategy.reduce(flag, reduce_op="max") > 0)

    def total(self, value):
        """`value` (a count, or a share of the step's loss) summed over the processes."""
        if self.world_size == 1:
            return value
        total = torch.as_tensor(value, dtype=torch.float64, device=self.device)
        total = self.strategy.reduce(total.clone(), reduce_op="sum")
        return int(total.item()) if isinstance(value, int) else total.to(value.dtype)

    def sum_gradients(self, parameters: Iterable[torch.nn.Parameter]) -> None:
        """The step's gradients summed over the processes: each process's are its items' share of
        the loss over every process's completion tokens, so the sum is one process's gradient on
        the whole batch, however the price tokens fall between the processes (DDP's own mean
        weights each process alike)."""
        if self.world_size == 1:
            return
        grads = [p.grad for p in parameters if p.requires_grad and p.grad is not None]
        if not grads:
            return
        flat = self.strategy.reduce(torch.cat([g.reshape(-1) for g in grads]), reduce_op="sum")
        offset = 0
        for grad in grads:
            grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
            offset += grad.numel()


@dataclass
class StepPasses:
    """A step's forward and backward passes over its items.

    Args:
        loss: A pass's summed completion loss and its token count, from its input_ids,
            attention_mask and labels (`PriceModel.completion_loss`).
        backward: Backward of a loss under the trainer's precision (`manual_backward`).
        parameters: The weights whose gradients a step accumulates.
        processes: The processes the gradients are summed over.
    """

    loss: Callable[..., tuple[torch.Tensor, torch.Tensor]]
    backward: Callable[[torch.Tensor], None]
    parameters: Callable[[], Iterable[torch.nn.Parameter]]
    processes: Processes

    def accumulate(
        self, batch: dict, micro: int | None, step: int = 0, recover: bool = True
    ) -> tuple[torch.Tensor, int | None]:
        """Forward and backward over a step's items in passes of `micro` (None: all at once);
        returns the step's loss (mean over its completion tokens, so the pass size does not
        change it; under DDP over every process's) and the smaller pass size a retry settled on
        (None when none was needed), which the run keeps, in checkpoints too.

        A pass that runs out of GPU memory drops the step's partial gradients and the step
        starts again with half as many items a pass (the largest that divides the batch), so no
        item is skipped or seen twice. Under DDP every process learns whether any ran out before
        gradients are summed, and all repeat the step together. `recover=False` lets the error
        through (the batch size search).
        """
        items = len(batch["input_ids"])
        processes = self.processes
        targets = max(1, processes.total(int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())))
        micro, settled = min(micro or items, items), None
        while True:
            loss, failed = None, False
            try:
                loss = self._passes(batch, micro, targets)
            except torch.cuda.OutOfMemoryError:
                if not recover:
                    raise
                failed = True
            # out of the except block: the failed pass's frames, and its activations, are gone
            if not processes.any(failed):
                processes.sum_gradients(self.parameters())
                return processes.total(loss), settled
            for p in self.parameters():
                p.grad = None
            free_memory()
            smaller = smaller_micro_batch(items, micro)
            if smaller is None:
                raise torch.cuda.OutOfMemoryError(
                    f"out of GPU memory at global step {step} with one item a pass: "
                    "nothing smaller to try; lower data.rules.max_tokens, turn on "
                    "model.gradient_checkpointing or use a larger GPU"
                )
            print(
                f"out of GPU memory at global step {step} with {micro} items a pass: "
                f"repeating the step with {smaller} a pass ({items // smaller} passes, the same "
                f"{items} items)",
                flush=True,
            )
            micro = settled = smaller

    def _passes(self, batch: dict, micro: int, targets: int) -> torch.Tensor:
        """The passes of one step. Under DDP no pass synchronises in its backward: a process that
        runs out of memory midway through a synchronising backward leaves the others waiting in
        the reduction until the process group times out (30 minutes). The gradients are summed
        once, after every process says it finished."""
        items = len(batch["input_ids"])
        total = torch.zeros((), device=batch["input_ids"].device)
        for start in range(0, items, micro):
            part = {k: batch[k][start : start + micro] for k in ("input_ids", "attention_mask", "labels")}
            length = int(part["attention_mask"].sum(-1).max())  # padded on the right: trim
            part = {k: v[:, :length] for k, v in part.items()}
            loss_sum, _ = self.loss(**part)
            with self.processes.no_sync():
                self.backward(loss_sum / targets)
            total += loss_sum.detach()
        return total / targets
