"""Reading on the CPU at the machine's limit, without changing what is read.

A 4-bit layer on the CPU dequantizes its weight at every forward, and a LoRA layer adds two more
matmuls; the digit search runs several small forwards per batch, so most of a CPU read is that
overhead. For reading (test, predict, the Space) on the CPU, each 4-bit layer is replaced by a
dense `nn.Linear` holding exactly the 4-bit model's weights (bitsandbytes' own dequantization
of them, in the layer's compute dtype; never the original full-precision base, which reads
differently) with the LoRA update merged in. On a GPU the 4-bit layers stay: there memory is
what matters.

`dense_weights(model)` swaps the layers in for a block and puts the 4-bit ones back after, so
a read in the middle of training (validation) leaves the model being trained as it was.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import torch
from torch import nn

CpuRead = Literal["dense", "4bit"]


def _is_4bit(module: nn.Module) -> bool:
    import bitsandbytes as bnb

    return isinstance(module, bnb.nn.Linear4bit)


def dequantized(layer: nn.Module) -> torch.Tensor:
    """A bitsandbytes 4-bit layer's weight as it computes with it: (out, in), in its compute dtype."""
    import bitsandbytes.functional as F

    weight = layer.weight
    dtype = layer.compute_dtype or weight.quant_state.dtype
    return F.dequantize_4bit(weight.data, weight.quant_state).to(dtype).reshape(weight.quant_state.shape)


def _lora_delta(module: nn.Module) -> torch.Tensor | None:
    """The merged LoRA update of a peft LoRA layer's active adapters (None when it has none or
    they are off); raises for kinds this cannot merge exactly (DoRA)."""
    if getattr(module, "disable_adapters", False) or getattr(module, "merged", False):
        return None
    delta = None
    for name in module.active_adapters:
        if name not in module.lora_A:
            continue
        if getattr(module, "use_dora", {}).get(name, False):
            raise NotImplementedError("DoRA layers are read in 4-bit")
        # peft's own delta: B @ A x scaling, transposed for fan-in-fan-out layers
        update = module.get_delta_weight(name).float()
        delta = update if delta is None else delta + update
    return delta


class DenseLinear(nn.Linear):
    """A dense layer that computes as a bitsandbytes 4-bit layer does: the input cast to the
    compute dtype, the output back to the input's dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # under autocast (bf16-mixed) the matmul runs in 16-bit, as bitsandbytes' CPU 4-bit
        # matmul does there too (its linear inside the op is autocast's): the same numbers
        return super().forward(x.to(self.weight.dtype)).to(x.dtype)


def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> DenseLinear:
    out_features, in_features = weight.shape
    # skip_init: no random initialisation, which would draw from (and move) the global RNG that
    # training's dropout uses after a validation
    dense = torch.nn.utils.skip_init(
        DenseLinear,
        in_features,
        out_features,
        bias=bias is not None,
        device=weight.device,
        dtype=weight.dtype,
    )
    with torch.no_grad():
        dense.weight.copy_(weight)
        if bias is not None:
            dense.bias.copy_(bias.to(weight.dtype))
    dense.requires_grad_(False)
    return dense


def _dense(module: nn.Module, merge: bool) -> tuple[str | None, DenseLinear] | None:
    """For a 4-bit layer: (None, its dense layer). For a LoRA layer over one, when `merge` and
    in fp32: (None, the dense layer with the LoRA update merged in); otherwise ("base_layer",
    the dense base), the LoRA path kept as peft computes it: merging a small update into 16-bit
    weights would round most of it away, and under autocast the LoRA path computes in 16-bit
    where a merged one would not. None for anything else."""
    base = module.get_base_layer() if hasattr(module, "get_base_layer") else module
    if not _is_4bit(base):
        return None
    weight = dequantized(base)
    if base is module:
        return None, _linear(weight, base.bias)
    if not merge or weight.dtype != torch.float32:
        return "base_layer", _linear(weight, base.bias)
    try:
        delta = _lora_delta(module)
    except NotImplementedError:
        return "base_layer", _linear(weight, base.bias)
    if delta is not None:
        weight = weight + delta.to(weight.device)
    return None, _linear(weight, base.bias)


def _replacements(model: nn.Module, merge: bool = True) -> list[tuple[nn.Module, str, nn.Module, nn.Linear]]:
    """(parent, attribute, the module replaced, its dense layer) for every 4-bit layer."""
    found = []
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if _is_4bit(child) and hasattr(parent, "get_base_layer"):
                continue  # a LoRA layer's base: decided with the LoRA layer
            dense = _dense(child, merge)
            if dense is None:
                continue
            inner, layer = dense
            if inner is None:
                found.append((parent, name, child, layer))
            else:
                found.append((child, inner, getattr(child, inner), layer))
    return found


def can_read_dense(model: nn.Module, device: torch.device) -> bool:
    """True on the CPU for a model with 4-bit layers: where the dense read pays."""
    return torch.device(device).type == "cpu" and any(_is_4bit(m) for m in model.modules())


def to_dense(model: nn.Module, merge: bool = True) -> int:
    """Replace the 4-bit (and LoRA-over-4-bit) layers by dense ones for good; returns how many.
    For a model that is only read from now on (the Space, predict)."""
    replacements = _replacements(model, merge)
    for parent, name, _, dense in replacements:
        setattr(parent, name, dense)
    return len(replacements)


@contextmanager
def dense_weights(model: nn.Module, merge: bool = True) -> Iterator[int]:
    """Within the block the model reads with dense weights (how many layers were swapped is
    yielded); after it, the 4-bit and LoRA layers are back, untouched. `merge=False` keeps the
    LoRA layers (for a read under autocast, where they compute in 16-bit)."""
    replacements = _replacements(model, merge)
    for parent, name, _, dense in replacements:
        setattr(parent, name, dense)
    try:
        yield len(replacements)
    finally:
        for parent, name, original, _ in replacements:
            setattr(parent, name, original)
