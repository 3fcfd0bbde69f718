"""Paged AdamW's state kept in its paged buffers: allocated once, never twice.

bitsandbytes' paged optimizers (pricer's on a GPU) hold each large moment in CUDA managed memory
(`bitsandbytes.functional.get_paged`), outside torch's allocator and its memory cap, and never
free it: dropping the tensor leaks its memory. Two things would make a second copy:

- the batch search puts the optimizer back as it was after its trial steps; loading the saved
  (empty) state drops the buffers the trials made, and the first real step pages new ones. Here
  the buffers are reset in place instead, to what bitsandbytes' `init_state` writes (zeros,
  step 0), so the first real step reuses them and computes exactly what a fresh state would;
- a resumed run's moments come back from the checkpoint as ordinary CUDA tensors, inside torch's
  cap, where the batch the run found left no room for them; here they are copied into paged
  buffers again.
"""

from __future__ import annotations

import torch

# bitsandbytes' quantization maps: constants init_state copies in, not state
CONSTANT_KEYS = ("qmap1", "qmap2")


def is_paged_optimizer(optimizer) -> bool:
    return bool(getattr(optimizer, "is_paged", False)) and hasattr(optimizer, "get_state_buffer")


def _paged(optimizer) -> set[int]:
    """The paged buffers bitsandbytes has allocated (it lists each one in its page manager; a
    tensor's own `is_paged` mark survives a checkpoint's save and load, so it proves nothing)."""
    return {id(t) for t in getattr(getattr(optimizer, "page_mng", None), "paged_tensors", ())}


def restore_in_place(optimizer, saved: dict) -> None:
    """Put a paged optimizer back to `saved` (its `state_dict()` taken earlier) without dropping
    a paged buffer: a parameter's paged tensors take the saved values in place, or the values
    bitsandbytes initialises them with when it had no state then."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    saved_state = saved["state"]
    paged = _paged(optimizer)
    for index, param in enumerate(params):
        state = optimizer.state.get(param)
        if not state:
            continue
        before = saved_state.get(index)
        if not before:
            if not any(id(v) in paged for v in state.values()):
                del optimizer.state[param]  # nothing paged to keep: bitsandbytes starts it afresh
                continue
            for key, value in state.items():
                if key == "step":
                    state[key] = 0
                elif isinstance(value, torch.Tensor) and key not in CONSTANT_KEYS:
                    value.zero_()
            continue
        # bitsandbytes' state_dict() nests the state tensors under one key (for FSDP)
        wrapped = getattr(optimizer, "_FSDP_WRAPPED_QUANT_STATE_KEY", None)
        before = {k: v for k, v in before.items() if k != wrapped} | before.get(wrapped, {})
        for key, value in before.items():
            current = state.get(key)
            if isinstance(current, torch.Tensor) and isinstance(value, torch.Tensor):
                current.copy_(value)
            else:
                state[key] = value
    for group, saved_group in zip(optimizer.param_groups, saved["param_groups"], strict=True):
        group.update({k: v for k, v in saved_group.items() if k != "params"})


def page_restored_state(optimizer) -> int:
    """Move a paged optimizer's large moments that are ordinary tensors (as a checkpoint restores
    them) into paged buffers; returns how many tensors moved."""
    if not is_paged_optimizer(optimizer):
        return 0
    moved = 0
    for param, state in optimizer.state.items():
        if not isinstance(param, torch.Tensor):
            continue
        for key, value in list(state.items()):
            if key not in ("state1", "state2") or not isinstance(value, torch.Tensor):
                continue
            if id(value) in _paged(optimizer):
                continue
            buffer = optimizer.get_state_buffer(param, dtype=value.dtype)
            if id(buffer) not in _paged(optimizer):
                continue  # too small to be paged (bitsandbytes keeps those as ordinary tensors)
            buffer.copy_(value.to(buffer.device))
            state[key] = buffer
            moved += 1
    return moved
