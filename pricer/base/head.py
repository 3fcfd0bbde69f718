"""The LM head outside autocast, in training and in every read.

peft's k-bit preparation keeps the LM head in fp32. Under 16-mixed or bf16-mixed its linear
would cast that whole weight to 16 bits at every call (Lightning's autocast caches no cast):
for Llama 3's 128k-token head a 0.98 GiB copy, kept for backward in training, and logits in
16 bits where the loss is fp32. Here it runs in its own dtype: the rows it is given are cast to
it, and autocast is off for the head alone.
"""

from __future__ import annotations

import contextlib

import torch


def head_outside_autocast(head: torch.nn.Module, rows: torch.Tensor) -> torch.Tensor:
    """The LM head on `rows`, in the head's own dtype, outside autocast."""
    with torch.autocast(rows.device.type, enabled=False):
        return head(rows.to(head.weight.dtype))


@contextlib.contextmanager
def head_in_its_dtype(model):
    """While open, the model's own forward runs its LM head as `head_outside_autocast` does
    (the reader calls the whole model, which calls the head itself)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    if head is None or not isinstance(getattr(head, "weight", None), torch.Tensor) or "forward" in vars(head):
        yield
        return
    original = head.forward

    def forward(rows: torch.Tensor) -> torch.Tensor:
        with torch.autocast(rows.device.type, enabled=False):
            return original(rows.to(head.weight.dtype))

    head.forward = forward
    try:
        yield
    finally:
        del head.forward
