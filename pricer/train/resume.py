"""What makes a fit resumable exactly: last.ckpt at the final step, checkpoints of the LoRA
weights alone with the random state and the pass size, and the data loader's place and the
paged optimizer state restored when a run resumes (tests/test_training.py)."""

from __future__ import annotations

import warnings
from pathlib import Path

from pricer.library_internals import resume_loader_place
from pricer.train import rng
from pricer.train.paged_state import page_restored_state

# Lightning 2.6 warns that a checkpoint saved under manual optimization holds the weights after
# the step. That is what pricer wants: the weights, optimizer and loop progress of the same step,
# so a resumed run continues exactly (tests/test_training.py).
warnings.filterwarnings(
    "ignore", message="Using ModelCheckpoint with manual optimization", category=UserWarning
)


class Resumable:
    """PriceModel's checkpoint hooks (a mixin: it uses the module's trainer and parameters)."""

    def on_train_batch_end(self, outputs, batch: dict, batch_idx: int) -> None:
        # The final step is always checkpointed as last.ckpt, so `test --ckpt_path last` measures
        # what fit measured (periodic checkpoints alone would leave it up to N steps behind).
        # Saved here, mid-loop like ModelCheckpoint's own saves, so it is also a resume point.
        trainer = self.trainer
        callback = trainer.checkpoint_callback
        if callback is None or callback.dirpath is None:
            return
        by_steps = trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps
        last_batch = trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
        by_epochs = last_batch and trainer.current_epoch + 1 >= (trainer.max_epochs or 1)
        if by_steps or by_epochs:
            last = Path(callback.dirpath) / "last.ckpt"
            # Told first, as Lightning does for its own: otherwise its save_last at the end finds a
            # last.ckpt it did not write and versions its own as last-v1.ckpt beside it.
            if callback.save_last:
                callback.last_model_path = str(last)
            trainer.save_checkpoint(last, weights_only=False)  # a whole one, to resume from

    def on_train_start(self) -> None:
        # Lightning restores the data loader's place in the epoch in setup_data(), but
        # configure_optimizers already ran setup_data() (through estimated_stepping_batches) and
        # made the epoch's iterator before the checkpoint's loop state was read: a resumed run
        # would start its epoch over from the first batch. Apply the saved place now and make
        # the iterator again. tests/test_training.py checks the resumed losses match.
        resume_loader_place(self.trainer)
        # A resumed run's paged AdamW moments were restored as ordinary tensors (inside torch's
        # memory cap, where the batch found has no room for them): paged again (paged_state.py).
        for optimizer in self.trainer.optimizers:
            page_restored_state(optimizer)

    def trainable_names(self) -> set[str]:
        return {name for name, p in self.named_parameters() if p.requires_grad}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # The base model is never written: an 8B job's checkpoint is megabytes, not gigabytes.
        keep = self.trainable_names()
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}
        checkpoint["pricer_rng"] = rng.capture()
        # A pass size halved after running out of memory stays halved when the run resumes.
        checkpoint["pricer_micro_batch_size"] = self.micro_batch_size

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = set(checkpoint["state_dict"])
        expected = self.trainable_names()
        if saved != expected:
            raise ValueError(
                "checkpoint does not match this model's LoRA adapter: "
                f"{len(saved - expected)} unexpected and {len(expected - saved)} missing weights "
                f"(e.g. {sorted(saved ^ expected)[:3]}); check model.lora_* and model.base_model"
            )
        if "pricer_rng" in checkpoint:
            rng.restore(checkpoint["pricer_rng"])
        if checkpoint.get("pricer_micro_batch_size") is not None:
            self.micro_batch_size = checkpoint["pricer_micro_batch_size"]
            self.micro_batch_size_restored = True
