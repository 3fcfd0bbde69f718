"""Progress as plain lines, for runs without a terminal (nohup, a log file, CI), where Lightning's
progress bar shows nothing: training steps with the loss, the time a step and the time left,
and the items read in test and predict."""

from __future__ import annotations

import sys
import time

import lightning as L
from lightning.pytorch.callbacks import Callback


def clock(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


class ProgressLog(Callback):
    """A line every `every` optimizer steps (default: a twentieth of the run, at least 1) and
    every twentieth of a test or predict pass; only when stdout is not a terminal, unless
    `always`.

    Args:
        every: Optimizer steps between training lines; null for a twentieth of the run.
        always: Print the lines on a terminal too.
    """

    def __init__(self, every: int | None = None, always: bool = False) -> None:
        self.every, self.always = every, always
        self._started = self._steps_at_start = None
        self._reading: dict[str, float] = {}

    @property
    def active(self) -> bool:
        return self.always or not sys.stdout.isatty()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started, self._steps_at_start = time.monotonic(), trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self.active or not trainer.is_global_zero or self._started is None:
            return
        total = int(trainer.estimated_stepping_batches) if trainer.max_steps < 0 else trainer.max_steps
        step = trainer.global_step
        every = self.every or max(1, total // 20)
        if step % every and step != total:
            return
        done = step - self._steps_at_start
        per_step = (time.monotonic() - self._started) / max(1, done)
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        shown = f", loss {float(loss):.4f}" if loss is not None else ""
        print(
            f"step {step}/{total} ({step / max(1, total):.0%}){shown}, {per_step:.2f} s a step, "
            f"ETA {clock(per_step * (total - step))}",
            flush=True,
        )

    def _start(self, stage: str, batch_idx: int) -> None:
        if batch_idx == 0:
            self._reading[stage] = time.monotonic()

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self._start("test", batch_idx)

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self._start("predict", batch_idx)

    def _read(self, stage: str, trainer: L.Trainer, batch_idx: int, batches: int) -> None:
        if not self.active or not trainer.is_global_zero or stage not in self._reading:
            return
        done = batch_idx + 1
        if done % max(1, batches // 20) and done != batches:
            return
        per_batch = (time.monotonic() - self._reading[stage]) / done
        print(
            f"{stage}: batch {done}/{batches} ({done / max(1, batches):.0%}), {per_batch:.2f} s a batch, "
            f"ETA {clock(per_batch * (batches - done))}",
            flush=True,
        )

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._read("test", trainer, batch_idx, int(trainer.num_test_batches[dataloader_idx]))

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._read("predict", trainer, batch_idx, int(trainer.num_predict_batches[dataloader_idx]))
