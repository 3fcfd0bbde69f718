"""The course's learning-rate schedule: linear warmup, then cosine decay to zero."""

from __future__ import annotations

import math
from collections.abc import Callable


def cosine_with_warmup(warmup_ratio: float, total_steps: Callable[[], int]) -> Callable[[int], float]:
    """An lr factor per optimizer step, as transformers' get_cosine_schedule_with_warmup.

    Hand-written on purpose: transformers' function takes the number of training steps when the
    scheduler is built, and pricer knows it only once fit starts (tests/test_schedule.py
    compares the two step by step).

    The total is asked for when a step needs it, not when the optimizer is built: the batch
    size finder and gradient accumulation settle the number of optimizer steps only at fit
    start, after configure_optimizers. A plain closure, so LambdaLR's state_dict (saved in
    checkpoints) holds no callable.
    """

    def factor(step: int) -> float:
        if step == 0 and warmup_ratio > 0:
            return 0.0
        total = max(1, int(total_steps()))
        warmup = math.ceil(total * warmup_ratio)
        if step < warmup:
            return step / max(1, warmup)
        progress = (step - warmup) / max(1, total - warmup)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))

    return factor
