"""A training step's forward and backward passes, with the out-of-memory retry: the gradients of
a step's items are accumulated in passes of `micro_batch_size`, and a pass that runs out of GPU
memory repeats the step with half as many items a pass (Lightning's own accumulation cannot
retry a step without skipping or repeating an item)."""

from __future__ import annotations

import contextlib

import torch

from pricer.data.batches import IGNORE_INDEX
from pricer.train.batch_size import free_memory, smaller_micro_batch


class MicroBatchPasses:
    """PriceModel's step in passes (a mixin: it uses the module's `completion_loss`, trainer and
    `micro_batch_size`)."""

    def accumulate_gradients(self, batch: dict, micro_batch_size: int | None = None, recover: bool = True):
        """Forward and backward over a step's items in passes of `micro_batch_size`; returns the
        step's loss (mean over its completion tokens, so the pass size does not change it; under
        DDP over every process's).

        A pass that runs out of GPU memory drops the step's partial gradients and the step
        starts again with half as many items a pass (the largest that divides the batch), so no
        item is skipped or seen twice; the smaller size is kept for the rest of the run and in
        checkpoints. Under DDP every process learns whether any ran out before gradients are
        summed, and all repeat the step together (see `_passes`). `recover=False` lets the
        error through (the batch size search).
        """
        items = len(batch["input_ids"])
        targets = max(1, self._over_processes(int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())))
        while True:
            micro = min(micro_batch_size or self.micro_batch_size or items, items)
            loss, failed = None, False
            try:
                loss = self._passes(batch, micro, targets)
            except torch.cuda.OutOfMemoryError:
                if not recover:
                    raise
                failed = True
            # out of the except block: the failed pass's frames, and its activations, are gone
            if not self._any_process(failed):
                self._sum_gradients()
                return self._over_processes(loss)
            self._drop_gradients()
            smaller = smaller_micro_batch(items, micro)
            if smaller is None:
                raise torch.cuda.OutOfMemoryError(
                    f"out of GPU memory at global step {self.global_step} with one item a pass: "
                    "nothing smaller to try; lower data.rules.max_tokens, turn on "
                    "model.gradient_checkpointing or use a larger GPU"
                )
            print(
                f"out of GPU memory at global step {self.global_step} with {micro} items a pass: "
                f"repeating the step with {smaller} a pass ({items // smaller} passes, the same "
                f"{items} items)",
                flush=True,
            )
            micro_batch_size = None
            self.micro_batch_size = smaller

    def _passes(self, batch: dict, micro: int, targets: int) -> torch.Tensor:
        """The passes of one step. Under DDP no pass synchronises in its backward (DDP's
        `no_sync`): a process that runs out of memory midway through a synchronising backward
        leaves the others waiting in the reduction until the process group times out (30
        minutes). The gradients are summed once, after every process says it finished."""
        items = len(batch["input_ids"])
        total = torch.zeros((), device=batch["input_ids"].device)
        for start in range(0, items, micro):
            part = {k: batch[k][start : start + micro] for k in ("input_ids", "attention_mask", "labels")}
            length = int(part["attention_mask"].sum(-1).max())  # padded on the right: trim
            part = {k: v[:, :length] for k, v in part.items()}
            loss_sum, _ = self.completion_loss(**part)
            with self._no_sync():
                self.manual_backward(loss_sum / targets)
            total += loss_sum.detach()
        return total / targets

    def _distributed(self) -> bool:
        return self._trainer is not None and self.trainer.world_size > 1

    def _no_sync(self):
        block = getattr(self.trainer.strategy, "block_backward_sync", None) if self._distributed() else None
        return block() if block is not None else contextlib.nullcontext()

    def _any_process(self, failed: bool) -> bool:
        """Whether this process or any other ran out of memory in this step's passes."""
        if not self._distributed():
            return failed
        flag = torch.tensor(float(failed), device=self.target_device)
        return bool(self.trainer.strategy.reduce(flag, reduce_op="max") > 0)

    def _over_processes(self, value):
        """`value` (a count, or a share of the step's loss) summed over the processes."""
        if not self._distributed():
            return value
        total = torch.as_tensor(value, dtype=torch.float64, device=self.target_device)
        total = self.trainer.strategy.reduce(total.clone(), reduce_op="sum")
        return int(total.item()) if isinstance(value, int) else total.to(value.dtype)

    def _sum_gradients(self) -> None:
        """The step's gradients summed over the processes: each process's are its items' share of
        the loss over every process's completion tokens, so the sum is one process's gradient on
        the whole batch, however the price tokens fall between the processes (DDP's own mean
        weights each process alike)."""
        if not self._distributed():
            return
        grads = [p.grad for p in self.parameters() if p.requires_grad and p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        flat = self.trainer.strategy.reduce(flat, reduce_op="sum")
        offset = 0
        for grad in grads:
            grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
            offset += grad.numel()

    def _drop_gradients(self) -> None:
        for p in self.parameters():
            p.grad = None
        free_memory()
