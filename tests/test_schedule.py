import pytest
import torch
from transformers import get_cosine_schedule_with_warmup

from pricer.train.schedule import cosine_with_warmup


@pytest.mark.parametrize("total, ratio", [(100, 0.03), (7, 0.03), (50, 0.0), (1, 0.03)])
def test_matches_transformers_cosine_with_warmup(total, ratio):
    import math

    ours = cosine_with_warmup(ratio, lambda: total)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    theirs = get_cosine_schedule_with_warmup(optimizer, math.ceil(total * ratio), total).lr_lambdas[0]
    for step in range(total + 2):
        assert ours(step) == pytest.approx(theirs(step), abs=1e-12), step


def test_the_total_is_read_when_needed():
    total = {"n": 10}
    factor = cosine_with_warmup(0.1, lambda: total["n"])
    assert factor(0) == 0.0  # no total needed to build the scheduler
    total["n"] = 100  # the batch finder and accumulation changed the number of steps
    assert factor(10) == pytest.approx(1.0)
