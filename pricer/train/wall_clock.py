"""A checkpoint every so many minutes of training, beside the one every so many steps.

A free notebook (Colab, Kaggle) that disconnects sends no signal: the process is killed, and
everything since the last checkpoint is lost. At about 10 s a step on a T4, a checkpoint every
500 steps is one every 80 minutes; this one bounds the loss by wall time. Lightning's own
`ModelCheckpoint(train_time_interval=...)` does nothing under manual optimization, which pricer
uses, so the time is kept here and the save is Lightning's public `trainer.save_checkpoint`,
into the `last.ckpt` that `--ckpt_path last` resumes, written beside it and moved into place so
a kill mid-write leaves the previous one whole.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import lightning as L
from jsonargparse.typing import PositiveFloat
from lightning.pytorch.callbacks import Callback, ModelCheckpoint


class CheckpointEveryMinutes(Callback):
    """Save `last.ckpt` whenever `minutes` of training have passed since the last save.

    Args:
        minutes: Wall time between checkpoints (a notebook that disconnects loses at most this).
    """

    def __init__(self, minutes: PositiveFloat = 20.0) -> None:
        self.minutes = float(minutes)
        self._since: float | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._since = time.monotonic()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        due = self._since is not None and time.monotonic() - self._since >= 60 * self.minutes
        if not trainer.strategy.broadcast(due) or trainer.sanity_checking:
            return
        last = last_checkpoint_path(trainer)
        if last is None:
            return
        partial = last.with_name(f".{last.name}.partial")
        trainer.save_checkpoint(partial, weights_only=False)  # a whole one, to resume from
        if trainer.is_global_zero:
            os.replace(partial, last)
        trainer.strategy.barrier("checkpoint_every_minutes")
        self._since = time.monotonic()


def last_checkpoint_path(trainer: L.Trainer) -> Path | None:
    """Where the trainer's `save_last` checkpoint callback keeps `last.ckpt`; None without one."""
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.save_last and callback.dirpath:
            return Path(callback.dirpath) / f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}"
    return None
