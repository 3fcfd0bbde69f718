"""The batch size search and out-of-memory recovery, on a 4-bit model with a simulated GPU memory.

The CPU never runs out of memory, so `TightMemory` plays the GPU: a forward pass over more tokens
than its limit raises `torch.cuda.OutOfMemoryError`, as a card would. What a pass needs grows with
its tokens, which is what decides the batch on a T4.
"""

from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from pricer.train.batch_size import (
    BatchSearchOutOfMemory,
    FitBatchSize,
    largest_that_fits,
    pass_sizes,
    smaller_micro_batch,
    split_effective_batch,
)
from pricer.train.model import PriceModel
from tests.conftest import Died, Kill, Losses, cpu_trainer, small_options, tiny_datamodule


@pytest.mark.parametrize(
    "effective, largest, world, expected",
    [
        (16, 64, 1, (16, 1)),
        (16, 5, 1, (4, 4)),
        (16, 3, 1, (2, 8)),
        (12, 8, 1, (6, 2)),
        (16, 8, 2, (8, 1)),
        (16, 3, 2, (2, 4)),
    ],
)
def test_the_effective_batch_is_kept(effective, largest, world, expected):
    batch, accumulation = split_effective_batch(effective, largest, world)
    assert (batch, accumulation) == expected and batch * accumulation * world == effective


def test_an_effective_batch_the_processes_cannot_share_is_refused():
    with pytest.raises(ValueError, match="not a multiple of the 2 processes"):
        split_effective_batch(5, 4, 2)


def test_pass_sizes_divide_the_step_and_halving_keeps_them_dividing():
    assert pass_sizes(12) == [1, 2, 3, 4, 6, 12]
    assert pass_sizes(16, 10) == [1, 2, 4, 8]
    assert smaller_micro_batch(16, 8) == 4
    assert smaller_micro_batch(12, 12) == 6
    assert smaller_micro_batch(12, 6) == 3
    assert smaller_micro_batch(12, 3) == 1
    assert smaller_micro_batch(16, 1) is None


@pytest.mark.parametrize("mode", ["power", "binsearch"])
@pytest.mark.parametrize("limit", [1, 3, 7, 8, 15, 16, 100])
def test_the_search_returns_the_largest_size_it_ran_and_tries_the_cap(mode, limit):
    sizes = pass_sizes(16)  # 1, 2, 4, 8, 16
    found, tried = largest_that_fits(sizes, lambda size: size <= limit, mode)
    assert found == max(s for s in sizes if s <= limit)
    assert tried[found] is True  # never a size it did not run
    assert all(ok == (size <= limit) for size, ok in tried.items())
    if limit >= 16:
        assert tried[16] is True  # the cap is tried like any other size


def test_binsearch_finds_a_size_between_doublings_that_power_misses():
    sizes = pass_sizes(12)  # 1, 2, 3, 4, 6, 12: doubling goes 1, 2, 4, 12 and 12 fails
    assert largest_that_fits(sizes, lambda s: s <= 7, "binsearch")[0] == 6
    assert largest_that_fits(sizes, lambda s: s <= 7, "power")[0] == 4


def test_a_failing_start_searches_downwards_and_nothing_fitting_is_an_error():
    found, tried = largest_that_fits(pass_sizes(16), lambda s: s <= 2, start=8)
    assert found == 2 and tried == {8: False, 4: False, 2: True}
    with pytest.raises(BatchSearchOutOfMemory, match="no batch size fits"):
        largest_that_fits(pass_sizes(16), lambda s: False)


class TightMemory(PriceModel):
    """A GPU with room for `limit(step, pass)` tokens in a pass (`pass` counts every pass of the
    run); the rows of the passes of the current optimizer step are kept in `pending` (a failed
    pass starts the step again from its start)."""

    limit = staticmethod(lambda step, index: float("inf"))
    passes = 0

    def completion_loss(self, input_ids, attention_mask, labels):
        self.passes += 1
        if input_ids.numel() > self.limit(self.global_step, self.passes - 1):
            self.pending = []
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        self.pending = getattr(self, "pending", []) + [
            tuple(row[mask.bool()].tolist()) for row, mask in zip(input_ids, attention_mask, strict=True)
        ]
        return super().completion_loss(input_ids, attention_mask, labels)


class Seen(Callback):
    """The items each optimizer step trained on."""

    def __init__(self):
        self.by_step = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.by_step[trainer.global_step] = pl_module.pending
        pl_module.pending = []


def tight(tiny_llama, **kwargs):
    import lightning as L

    L.seed_everything(42)
    return TightMemory(**small_options(tiny_llama, dropout=0.0, **kwargs))


def longest_train_item(dm) -> int:
    dm.setup("fit")
    return max(len(ids) for ids in dm.datasets["train"]["input_ids"])


def test_the_search_finds_the_largest_fitting_size_and_tries_the_cap(tiny_llama, raw_items, tmp_path, capsys):
    dm = tiny_datamodule(raw_items, tiny_llama)  # 32 train items
    longest = longest_train_item(dm)
    module = tight(tiny_llama)
    module.limit = staticmethod(lambda step, index: 8 * longest)  # room for 8 of the longest item
    finder = FitBatchSize(effective_batch_size=16, max_val=16, steps_per_trial=2)
    fit = cpu_trainer(tmp_path, [finder], max_steps=1)
    fit.fit(module, datamodule=dm)
    # 16 was tried and ran out of memory: Lightning's finder returned it untried
    assert finder.tried == {1: True, 2: True, 4: True, 8: True, 16: False}
    assert finder.found == 8 and module.micro_batch_size == 8 and dm.batch_size == 16
    assert "batch size: 8 x 2 accumulation x 1 process(es) = 16 per optimizer step" in capsys.readouterr().out


def test_the_cap_is_returned_when_it_fits_and_only_after_running(tiny_llama, raw_items, tmp_path):
    dm = tiny_datamodule(raw_items, tiny_llama)
    longest = longest_train_item(dm)
    module = tight(tiny_llama)
    module.limit = staticmethod(lambda step, index: 16 * longest)
    finder = FitBatchSize(effective_batch_size=16, max_val=16, steps_per_trial=1)
    cpu_trainer(tmp_path, [finder], max_steps=1).fit(module, datamodule=dm)
    assert finder.found == 16 and finder.tried[16] is True


def test_the_search_leaves_no_trace_in_the_run(tiny_llama, raw_items, tmp_path):
    """Its trial steps change weights, optimizer, scaler and random state; all are put back, so
    the run trains exactly as one told the batch size from the start."""
    searched, told = Losses(), Losses()
    finder = FitBatchSize(effective_batch_size=8, max_val=4, steps_per_trial=2)
    module = tight(tiny_llama, lora={"dropout": 0.1})
    cpu_trainer(tmp_path / "searched", [finder, searched]).fit(
        module, datamodule=tiny_datamodule(raw_items, tiny_llama)
    )
    assert finder.found == 4 and len(searched.by_step) == 4  # 32 items, 8 a step

    dm = tiny_datamodule(raw_items, tiny_llama)
    dm.batch_size = 8
    cpu_trainer(tmp_path / "told", [told]).fit(
        tight(tiny_llama, micro_batch_size=4, lora={"dropout": 0.1}), datamodule=dm
    )
    assert searched.by_step == pytest.approx(told.by_step, rel=1e-6)


def test_the_search_runs_once_and_leaves_no_stray_file(tiny_llama, raw_items, tmp_path, capsys):
    finder = FitBatchSize(effective_batch_size=8, max_val=4, steps_per_trial=1)
    dm = tiny_datamodule(raw_items, tiny_llama)
    dm.batch_size = 1
    fit = cpu_trainer(tmp_path, [finder], every=2)
    module = tight(tiny_llama)
    fit.fit(module, datamodule=dm)
    assert finder.tried == {1: True, 2: True, 4: True}  # the CPU never runs out: the cap stops it
    assert (dm.batch_size, module.micro_batch_size, fit.global_step) == (8, 4, 4)
    assert not list(tmp_path.rglob(".scale_batch_size_*"))
    assert "batch size: 4 x 2 accumulation x 1 process(es) = 8 per optimizer step" in capsys.readouterr().out
    fit.validate(module, datamodule=dm)  # no second search outside fit
    assert finder.found == 4 and dm.batch_size == 8


def test_a_step_that_runs_out_of_memory_is_repeated_smaller_losing_no_item(
    tiny_llama, raw_items, tmp_path, capsys
):
    dm = tiny_datamodule(raw_items, tiny_llama)
    longest = longest_train_item(dm)
    dm.batch_size = 8  # 4 optimizer steps of 8 items, passes of 4

    calm, calm_seen = Losses(), Seen()
    cpu_trainer(tmp_path / "calm", [calm, calm_seen]).fit(
        tight(tiny_llama, micro_batch_size=4), datamodule=dm
    )

    squeezed, seen = Losses(), Seen()
    module = tight(tiny_llama, micro_batch_size=4)
    # after the first pass of step 2 (steps 0 and 1 took passes 0-3) the card has room for 2 of
    # the longest items only: the step's first pass already left its gradients when it fails
    module.limit = staticmethod(lambda step, index: float("inf") if index < 5 else 2 * longest)
    dm = tiny_datamodule(raw_items, tiny_llama)
    dm.batch_size = 8
    fit = cpu_trainer(tmp_path / "squeezed", [squeezed, seen], every=1)
    fit.fit(module, datamodule=dm)
    out = capsys.readouterr().out
    assert "out of GPU memory at global step 2 with 4 items a pass: repeating the step with 2 a pass" in out
    assert out.count("out of GPU memory") == 1 and module.micro_batch_size == 2
    assert fit.global_step == 4
    # every item once, in the same steps as the run that had room
    assert {s: sorted(items) for s, items in seen.by_step.items()} == {
        s: sorted(items) for s, items in calm_seen.by_step.items()
    }
    assert sum(len(items) for items in seen.by_step.values()) == 32
    assert squeezed.by_step == pytest.approx(calm.by_step, rel=1e-5)
    saved = torch.load(tmp_path / "squeezed" / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["pricer_micro_batch_size"] == 2


def test_a_run_resumed_after_halving_keeps_the_smaller_pass_and_its_losses(
    tiny_llama, raw_items, tmp_path, capsys
):
    def squeezed(step, index):
        return float("inf") if step < 2 else 2 * longest

    dm = tiny_datamodule(raw_items, tiny_llama)
    longest = longest_train_item(dm)
    whole = Losses()
    module = tight(tiny_llama, micro_batch_size=4)
    module.limit = staticmethod(squeezed)
    dm.batch_size = 8
    cpu_trainer(tmp_path / "whole", [whole]).fit(module, datamodule=dm)

    first = Losses()
    module = tight(tiny_llama, micro_batch_size=4)
    module.limit = staticmethod(squeezed)
    dm = tiny_datamodule(raw_items, tiny_llama)
    dm.batch_size = 8
    with pytest.raises(Died):
        cpu_trainer(tmp_path / "killed", [first, Kill(step=3)], every=1).fit(module, datamodule=dm)
    capsys.readouterr()

    resumed = Losses()
    fresh = tight(tiny_llama, micro_batch_size=4)  # the config says 4; the checkpoint says 2
    fresh.limit = staticmethod(lambda step, index: 2 * longest)
    dm = tiny_datamodule(raw_items, tiny_llama)
    dm.batch_size = 8
    torch.manual_seed(1234)
    cpu_trainer(tmp_path / "killed", [resumed], every=1).fit(
        fresh, datamodule=dm, ckpt_path=str(tmp_path / "killed" / "checkpoints" / "last.ckpt")
    )
    assert "out of GPU memory" not in capsys.readouterr().out  # it resumed at 2 a pass
    assert fresh.micro_batch_size == 2
    assert sorted(resumed.by_step) == [4]
    assert resumed.by_step[4] == pytest.approx(whole.by_step[4], rel=1e-6)


def test_one_item_that_does_not_fit_is_a_clear_error(tiny_llama, raw_items, tmp_path):
    module = tight(tiny_llama, micro_batch_size=2)
    module.limit = staticmethod(lambda step, index: 1)
    dm = tiny_datamodule(raw_items, tiny_llama)
    with pytest.raises(torch.cuda.OutOfMemoryError, match="with one item a pass: nothing smaller to try"):
        cpu_trainer(tmp_path, []).fit(module, datamodule=dm)


def test_the_logger_gets_the_batch_the_learning_rate_and_the_speed(tiny_llama, raw_items, tmp_path):
    """W&B (any logger) never saw the learning rate, the batch found or the tokens a second."""
    import csv

    import yaml
    from lightning.pytorch.loggers import CSVLogger

    finder = FitBatchSize(effective_batch_size=8, max_val=4, steps_per_trial=1)
    logger = CSVLogger(tmp_path, name="logs", version="")
    trainer = cpu_trainer(tmp_path, [finder], logger=logger, log_every_n_steps=1)
    trainer.fit(tight(tiny_llama), datamodule=tiny_datamodule(raw_items, tiny_llama))
    rows = [r for r in csv.DictReader((tmp_path / "logs" / "metrics.csv").open()) if r.get("lr")]
    assert len(rows) == 4 and float(rows[0]["lr"]) > 0 and all(float(r["tokens_per_s"]) > 0 for r in rows)
    batch = yaml.safe_load((tmp_path / "logs" / "hparams.yaml").read_text())["batch"]
    assert batch == {
        "items_per_step": 8, "items_per_pass": 4, "passes_per_step": 2, "processes": 1,
        "search_found": 4, "memory_budget_gib": 14.0,
    }  # fmt: skip


# --- what a GPU's memory needs of the search and the retry, simulated on the CPU


class Traced(TightMemory):
    """Each pass keeps a tensor standing in for its activations, watched by a weak reference:
    alive for as long as anything (a traceback's frames, say) still holds the failed pass."""

    def completion_loss(self, input_ids, attention_mask, labels):
        import weakref

        activations = torch.ones(1024)
        self.last_pass = weakref.ref(activations)
        return super().completion_loss(input_ids, attention_mask, labels)


def freed_when_cleaning(monkeypatch, module, where: str) -> list[bool]:
    """For each clean-up after running out of memory: whether the failed pass was gone by then."""
    import pricer.train.batch_size
    import pricer.train.passes

    seen = []
    original = pricer.train.batch_size.free_memory

    def free_memory():
        seen.append(module.last_pass() is None)
        original()

    monkeypatch.setattr(getattr(pricer.train, where), "free_memory", free_memory)
    return seen


def test_a_step_cleans_up_only_after_the_failed_pass_is_released(
    tiny_llama, raw_items, tmp_path, monkeypatch
):
    dm = tiny_datamodule(raw_items, tiny_llama)
    longest = longest_train_item(dm)
    dm.batch_size = 8  # passes of 4: the second one runs out
    module = tight(tiny_llama, micro_batch_size=4)
    module.__class__ = Traced
    module.limit = staticmethod(lambda step, index: float("inf") if index != 1 else 2 * longest)
    seen = freed_when_cleaning(monkeypatch, module, "passes")
    cpu_trainer(tmp_path, [], max_steps=1).fit(module, datamodule=dm)
    assert seen == [True] and module.micro_batch_size == 2


def test_the_search_cleans_up_only_after_the_failed_trial_is_released(
    tiny_llama, raw_items, tmp_path, monkeypatch
):
    dm = tiny_datamodule(raw_items, tiny_llama)
    longest = longest_train_item(dm)
    module = tight(tiny_llama)
    module.__class__ = Traced
    module.limit = staticmethod(lambda step, index: 4 * longest)
    seen = freed_when_cleaning(monkeypatch, module, "batch_size")
    finder = FitBatchSize(effective_batch_size=16, max_val=16, steps_per_trial=1)
    cpu_trainer(tmp_path, [finder], max_steps=1).fit(module, datamodule=dm)
    assert finder.tried == {1: True, 2: True, 4: True, 8: False}
    assert seen and all(seen), seen  # after the failed trial, and after the search


class FailsAfterUnscaling(TightMemory):
    """Runs out of memory in the clipping, after the GradScaler has unscaled the gradients: in
    trials of more than `fits` items a pass."""

    fits = 2

    def on_before_optimizer_step(self, optimizer) -> None:
        if (self.micro_batch_size_in_trial or 0) > self.fits:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated, in the clipping)")
        super().on_before_optimizer_step(optimizer)

    def accumulate_gradients(self, batch, micro_batch_size=None, recover=True):
        self.micro_batch_size_in_trial = micro_batch_size if not recover else None
        return super().accumulate_gradients(batch, micro_batch_size, recover)


def test_a_trial_that_fails_after_the_scaler_unscaled_leaves_the_scaler_ready(
    tiny_llama, raw_items, tmp_path
):
    """16-mixed's GradScaler (torch's CPU scaler, enabled): a trial that runs out of memory after
    `unscale_` must not leave it marked unscaled for the next trial ("unscale_() has already
    been called"), nor for training."""
    import lightning as L
    from lightning.pytorch.plugins.precision import MixedPrecision

    L.seed_everything(42)
    module = FailsAfterUnscaling(
        base_model=tiny_llama, quantization={"weights": "none"}, lora={"r": 8, "alpha": 16, "dropout": 0.0}
    )
    scaler = torch.amp.GradScaler("cpu")
    precision = MixedPrecision("16-mixed", "cpu", scaler=scaler)
    finder = FitBatchSize(effective_batch_size=8, max_val=8, steps_per_trial=1, init_val=4)
    fit = cpu_trainer(tmp_path, [finder], max_steps=2, plugins=[precision])
    fit.fit(module, datamodule=tiny_datamodule(raw_items, tiny_llama))
    assert finder.tried == {4: False, 2: True} and finder.found == 2
    assert fit.global_step == 2 and scaler.is_enabled()


class PagedOnTheCpu:
    """Stands in for bitsandbytes' paged buffers (CUDA managed memory, never freed): every moment
    is a buffer of its own, marked paged, and counted."""

    def __init__(self):
        self.allocated = []

    def optimizer(self, params, **kwargs):
        import bitsandbytes as bnb

        allocated = self.allocated

        class Paged(bnb.optim.PagedAdamW):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                self.page_mng = SimpleNamespace(paged_tensors=[])  # bitsandbytes' list of them

            def get_state_buffer(self, p, dtype=torch.float32):
                buffer = torch.zeros_like(p, dtype=dtype)
                buffer.is_paged = True
                self.page_mng.paged_tensors.append(buffer)
                allocated.append(buffer)
                return buffer

            def prefetch_state(self, p):  # the page-in call needs CUDA
                pass

        return Paged(params, **kwargs)


class PagedModel(TightMemory):
    paged: PagedOnTheCpu

    def configure_optimizers(self):
        configured = super().configure_optimizers()
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = self.paged.optimizer(
            params, lr=self.hparams.optimizer["learning_rate"], weight_decay=0.001
        )
        scheduler = configured["lr_scheduler"]["scheduler"]
        scheduler.optimizer = optimizer
        return {"optimizer": optimizer, "lr_scheduler": configured["lr_scheduler"]}


def paged_model(tiny_llama, micro_batch_size=None) -> PagedModel:
    module = tight(tiny_llama, micro_batch_size=micro_batch_size)
    module.__class__ = PagedModel
    module.paged = PagedOnTheCpu()
    return module


def test_the_search_reuses_paged_adamw_buffers_and_trains_as_without_it(tiny_llama, raw_items, tmp_path):
    searched, told = Losses(), Losses()
    module = paged_model(tiny_llama)
    finder = FitBatchSize(effective_batch_size=8, max_val=4, steps_per_trial=2)
    cpu_trainer(tmp_path / "searched", [finder, searched], max_steps=3).fit(
        module, datamodule=tiny_datamodule(raw_items, tiny_llama)
    )
    lora = [p for p in module.parameters() if p.requires_grad]
    # two moments a LoRA weight, allocated once: by the first trial, reused by training
    assert len(module.paged.allocated) == 2 * len(lora)
    state = module.trainer.optimizers[0].state
    assert all(state[p]["state1"] is module.paged.allocated[2 * i] for i, p in enumerate(lora))

    dm = tiny_datamodule(raw_items, tiny_llama)
    dm.batch_size = 8
    cpu_trainer(tmp_path / "told", [told], max_steps=3).fit(
        paged_model(tiny_llama, micro_batch_size=4), datamodule=dm
    )
    assert searched.by_step == pytest.approx(told.by_step, rel=1e-6)


def test_a_resumed_runs_adamw_moments_are_paged_again(tiny_llama, raw_items, tmp_path):
    dm = tiny_datamodule(raw_items, tiny_llama)
    dm.batch_size = 8
    with pytest.raises(Died):
        cpu_trainer(tmp_path, [Kill(step=2)], every=1).fit(paged_model(tiny_llama, 4), datamodule=dm)

    class Moments(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            optimizer = trainer.optimizers[0]
            buffers = {id(b) for b in optimizer.page_mng.paged_tensors}
            self.paged = [id(s[k]) in buffers for s in optimizer.state.values() for k in ("state1", "state2")]

    moments, module = Moments(), paged_model(tiny_llama, 4)
    dm = tiny_datamodule(raw_items, tiny_llama)
    dm.batch_size = 8
    cpu_trainer(tmp_path, [moments], every=1, max_steps=3).fit(
        module, datamodule=dm, ckpt_path=str(tmp_path / "checkpoints" / "last.ckpt")
    )
    lora = [p for p in module.parameters() if p.requires_grad]
    assert moments.paged == [True] * (2 * len(lora))
    assert len(module.paged.allocated) == 2 * len(lora)  # copied in once, not allocated again
