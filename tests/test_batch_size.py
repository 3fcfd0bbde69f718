"""The batch size finder on a 4-bit model, and the effective batch it keeps."""

import pytest

from pricer.batch_size import FitBatchSize, split_effective_batch
from tests.test_training import Losses, datamodule, model, trainer


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


def test_finder_completes_on_a_4bit_model_once_and_leaves_no_stray_file(
    tiny_llama, raw_items, tmp_path, capsys
):
    finder = FitBatchSize(effective_batch_size=8, max_val=4, steps_per_trial=1)
    losses = Losses()
    dm = datamodule(raw_items, tiny_llama)  # 32 train items, configured batch 4
    dm.batch_size = 1
    fit = trainer(tmp_path, [finder, losses], every=2)
    module = model(tiny_llama)
    fit.fit(module, datamodule=dm)
    assert finder.found == 4  # the CPU never runs out of memory: the cap stops the search
    assert (dm.batch_size, fit.accumulate_grad_batches) == (4, 2)
    assert fit.global_step == 4  # 32 items in 8 batches of 4: 4 optimizer steps of 8
    assert not list(tmp_path.rglob(".scale_batch_size_*"))
    assert "batch size: 4 x 2 accumulation x 1 process(es) = 8 per optimizer step" in capsys.readouterr().out

    fit.validate(module, datamodule=dm)  # no second search outside fit
    assert finder.found == 4 and dm.batch_size == 4
