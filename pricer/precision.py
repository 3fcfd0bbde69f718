"""Which floating-point precision a device trains and reads in: native, never emulated.

`torch.cuda.is_bf16_supported()` answers True on a T4 (compute capability 7.5) because bf16 can
be emulated there; Turing's tensor cores run fp16 only (bitsandbytes' own dispatch: "sm75 has
fp16 MMA only"), so bf16 on a T4 runs several times slower than fp16. The rule here asks the
compute capability instead: bf16 from Ampere (8.0) on, fp16 below it, fp32 on the CPU.
"""

from __future__ import annotations

from typing import Literal

import torch

ComputeDtype = Literal["auto", "float32", "bfloat16", "float16"]

# Ampere (A100 8.0, A10G 8.6), Ada (L4 8.9) and Hopper (H100 9.0) have bf16 tensor cores;
# Volta (7.0) and Turing (T4 7.5) do not.
NATIVE_BF16_FROM = (8, 0)


def native_bf16(device: torch.device | int | None = None) -> bool:
    """Whether a CUDA device computes bf16 in hardware (compute capability 8.0 or later)."""
    return tuple(torch.cuda.get_device_capability(device)) >= NATIVE_BF16_FROM


def _cuda_index(device: torch.device) -> int | None:
    return device.index if device.index is not None else None


def resolve_dtype(name: ComputeDtype, device: torch.device) -> torch.dtype:
    """The compute dtype for a device: fp16 below compute capability 8.0 (a T4), bf16 from it,
    fp32 on the CPU. A dtype named explicitly is kept as it is."""
    if name != "auto":
        return getattr(torch, name)
    if device.type == "cuda":
        return torch.bfloat16 if native_bf16(_cuda_index(device)) else torch.float16
    return torch.float32


def default_precision(accelerator: str | None) -> str:
    """Lightning precision for the device: 16-mixed below compute capability 8.0 (a T4),
    bf16-mixed from it, 32-true on the CPU. Set trainer.precision to override (bf16 on a CPU is
    fair when accuracy holds)."""
    if accelerator == "cpu" or not torch.cuda.is_available():
        return "32-true"
    return "bf16-mixed" if native_bf16() else "16-mixed"


def emulated_bf16_warning(precision: str | None, accelerator: str | None) -> str | None:
    """A warning when bf16 was asked for on a GPU that would only emulate it, else None."""
    if precision is None or "bf16" not in str(precision):
        return None
    if accelerator == "cpu" or not torch.cuda.is_available() or native_bf16():
        return None
    major, minor = torch.cuda.get_device_capability()
    return (
        f"trainer.precision={precision} on {torch.cuda.get_device_name()} (compute capability "
        f"{major}.{minor}): this GPU has no bf16 tensor cores and emulates it, several times slower "
        "than 16-mixed; leave trainer.precision unset to get 16-mixed"
    )
