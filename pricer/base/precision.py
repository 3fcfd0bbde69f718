"""Which floating-point precision a device trains and reads in: native, never emulated.

`torch.cuda.is_bf16_supported()` answers True on a T4 (compute capability 7.5) because bf16 can
be emulated there; Turing's tensor cores run fp16 only (bitsandbytes' own dispatch: "sm75 has
fp16 MMA only"), so bf16 on a T4 runs several times slower than fp16. The rule here asks the
compute capability instead: bf16 from Ampere (8.0) on, fp16 below it, fp32 on the CPU.

The question is asked without initialising CUDA in this process: the CLI decides the precision
before Lightning starts its processes, and a process that has initialised CUDA cannot fork
them (`ddp_fork`, `ddp_notebook`, Kaggle's 2 x T4 notebooks: "Cannot re-initialize CUDA in
forked subprocess"). Until CUDA is initialised here, a child process answers.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from typing import Literal

import torch

ComputeDtype = Literal["auto", "float32", "bfloat16", "float16"]

# Ampere (A100 8.0, A10G 8.6), Ada (L4 8.9) and Hopper (H100 9.0) have bf16 tensor cores;
# Volta (7.0) and Turing (T4 7.5) do not.
NATIVE_BF16_FROM = (8, 0)

_ASK = (
    "import json, sys, torch; i = int(sys.argv[1]); "
    "print(json.dumps([list(torch.cuda.get_device_capability(i)), torch.cuda.get_device_name(i)]))"
)


def cuda_present() -> bool:
    """Whether there is a CUDA device, asked the way torch's `device_count` does (through NVML
    where it can), which initialises nothing."""
    return torch.cuda.is_available() and torch.cuda.device_count() > 0


# What a card whose capability cannot be read is taken for: one without bf16 tensor cores, so it
# trains and reads in fp16 (16-mixed), which every CUDA card computes natively.
UNKNOWN_CARD = ((7, 5), "an unknown CUDA device")


def _why(error: BaseException) -> str:
    if isinstance(error, subprocess.CalledProcessError):
        lines = (error.stderr or "").strip().splitlines()
        return f"the process that asks exited with {error.returncode}" + (f": {lines[-1]}" if lines else "")
    if isinstance(error, subprocess.TimeoutExpired):
        return f"the process that asks gave no answer in {error.timeout:.0f} s"
    return f"{type(error).__name__}: {error}"


def _ask_nvml(index: int) -> tuple[tuple[int, int], str] | None:
    """The capability and name from NVML (the driver's library, no CUDA context), when the
    bindings are installed."""
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
        name = pynvml.nvmlDeviceGetName(handle)
        return (int(major), int(minor)), name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # no bindings, no driver, no such device: the caller falls back
        return None


@functools.cache
def _ask_a_child(index: int) -> tuple[tuple[int, int], str]:
    """A CUDA device's compute capability and name, from a short-lived process of its own; when
    that process fails (a GPU in exclusive-process mode, a Python outside the notebook kernel's
    environment), from NVML, else taken for a card without bf16, each said in one line."""
    try:
        answer = subprocess.run(
            [sys.executable, "-c", _ASK, str(index)], capture_output=True, text=True, timeout=300, check=True
        )
        capability, name = json.loads(answer.stdout.strip().splitlines()[-1])
        return (int(capability[0]), int(capability[1])), str(name)
    except (subprocess.SubprocessError, OSError, ValueError, IndexError, TypeError) as error:
        why = _why(error)
    found = _ask_nvml(index)
    if found is not None:
        print(
            f"pricer: warning: CUDA device {index}: {why}; its compute capability is NVML's", file=sys.stderr
        )
        return found
    print(
        f"pricer: warning: CUDA device {index}: its compute capability cannot be read ({why}); taken "
        "for a card without bf16 (16-mixed, fp16): set trainer.precision and "
        "model.quantization.compute_dtype to choose",
        file=sys.stderr,
    )
    return UNKNOWN_CARD


def card(device: torch.device | int | None = None) -> tuple[tuple[int, int], str]:
    """(compute capability, name) of a CUDA device, without initialising CUDA here."""
    index = device.index if isinstance(device, torch.device) else device
    index = 0 if index is None else index
    if torch.cuda.is_initialized():
        return tuple(torch.cuda.get_device_capability(index)), torch.cuda.get_device_name(index)
    return _ask_a_child(index)


def native_bf16(device: torch.device | int | None = None) -> bool:
    """Whether a CUDA device computes bf16 in hardware (compute capability 8.0 or later)."""
    return card(device)[0] >= NATIVE_BF16_FROM


def resolve_dtype(name: ComputeDtype, device: torch.device) -> torch.dtype:
    """The compute dtype for a device: fp16 below compute capability 8.0 (a T4), bf16 from it,
    fp32 on the CPU. A dtype named explicitly is kept as it is."""
    if name != "auto":
        return getattr(torch, name)
    if device.type == "cuda":
        return torch.bfloat16 if native_bf16(device) else torch.float16
    return torch.float32


def default_precision(accelerator: str | None) -> str:
    """Lightning precision for the device: 16-mixed below compute capability 8.0 (a T4),
    bf16-mixed from it, 32-true on the CPU. Set trainer.precision to override (bf16 on a CPU is
    fair when accuracy holds)."""
    if accelerator == "cpu" or not cuda_present():
        return "32-true"
    return "bf16-mixed" if native_bf16() else "16-mixed"


def on_the_device(precision: str, device_type: str) -> str:
    """The precision a read runs under on this kind of device, as Lightning's Trainer runs it: on
    a CPU, which has no fp16 autocast of its own, 16-mixed (a T4's) becomes bf16-mixed. `test`
    (through the Trainer) and the Space (`Pricer`) share this rule, so on one machine they read
    one adapter alike."""
    if device_type == "cpu" and str(precision) == "16-mixed":
        return "bf16-mixed"
    return str(precision)


def cpu_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware: AVX512-BF16 or AMX (torch's own checks).

    Without them torch emulates bf16, and on the CPU that is not a few times slower but two orders
    of magnitude: on a 2-core AMD EPYC with AVX2 only, 512-square bf16 matmuls ran at 1.1 GFLOP/s
    against fp32's 177 (2048-square ones did not finish a 300 s benchmark), and a
    `configs/sample.yaml` training step (bf16-mixed, five neighbours) took 500-600 s against about
    20 s in 32-true (benchmarks/RESULTS.md).
    """
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def emulated_cpu_bf16(precision: str | None) -> str | None:
    """'this CPU (<capability>, ...)' when bf16 is asked of a CPU that only emulates it."""
    if precision is None or "bf16" not in str(precision) or cpu_native_bf16():
        return None
    return f"this CPU ({torch.backends.cpu.get_cpu_capability()}, without AVX512-BF16 or AMX)"


def emulated_cpu_fp16(precision: str | None) -> str | None:
    """'this CPU (<capability>, ...)' when fp16 (16-mixed, 16-true: a T4's precision) is asked of
    a CPU, which computes it only with AMX-FP16 and emulates it otherwise."""
    if precision is None or not str(precision).startswith("16"):
        return None
    if getattr(torch.cpu, "_is_amx_fp16_supported", lambda: False)():
        return None
    return f"this CPU ({torch.backends.cpu.get_cpu_capability()}, without AMX-FP16)"


def emulated_bf16(precision: str | None, device: torch.device | int | None = None) -> str | None:
    """'<card> (compute capability x.y)' when bf16 is asked of a CUDA card that only emulates it."""
    if precision is None or "bf16" not in str(precision) or not cuda_present():
        return None
    (major, minor), name = card(device)
    if (major, minor) >= NATIVE_BF16_FROM:
        return None
    return f"{name} (compute capability {major}.{minor})"


def emulated_bf16_warning(precision: str | None, accelerator: str | None) -> str | None:
    """A warning when bf16 was asked for on a GPU or a CPU that would only emulate it, else None."""
    if accelerator == "cpu" or not cuda_present():
        runs = on_the_device(precision, "cpu") if precision is not None else None
        emulated = emulated_cpu_bf16(runs)
        if emulated:
            shown = precision if runs == precision else f"{precision} (bf16-mixed on a CPU)"
            return (
                f"trainer.precision={shown} on {emulated}: bf16 is emulated here, about a hundred "
                "times slower than 32-true; pass --trainer.precision 32-true (bf16-mixed pays only on a "
                "CPU with AVX512-BF16 or AMX)"
            )
        emulated = emulated_cpu_fp16(runs)
        if emulated:
            return (
                f"trainer.precision={precision} on {emulated}: fp16 is a GPU's precision and is emulated "
                "here, far slower than 32-true; pass --trainer.precision 32-true"
            )
        return None
    emulated = emulated_bf16(precision)
    if emulated is None:
        return None
    return (
        f"trainer.precision={precision} on {emulated}: this GPU has no bf16 tensor cores and "
        "emulates it, several times slower than 16-mixed; leave trainer.precision unset to get 16-mixed"
    )
