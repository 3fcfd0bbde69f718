"""Flat config fields turned into library objects, in one place (as TRL's get_*_config)."""

from __future__ import annotations

from typing import Literal

import torch

Quantization = Literal["4bit", "8bit", "none"]


class QuantizationUnavailable(RuntimeError):
    """The quantization asked for cannot run here."""


def check_bitsandbytes(quantization: Quantization, device: torch.device) -> None:
    """Stop before any work when quantization is asked where bitsandbytes cannot run it."""
    if quantization == "none":
        return
    try:
        import bitsandbytes  # noqa: F401
    except Exception as error:  # an ImportError, or a broken native library
        raise QuantizationUnavailable(
            f"model.quantization={quantization} needs bitsandbytes, which cannot be loaded here "
            f"({error}); install bitsandbytes>=0.46 or set model.quantization=none"
        ) from error
    if quantization == "8bit" and device.type == "cpu":
        raise QuantizationUnavailable(
            "model.quantization=8bit does not run on the CPU; use 4bit (bitsandbytes>=0.46 runs "
            "NF4 on the CPU) or none"
        )


def bnb_config(quantization: Quantization, quant_type: str, double_quant: bool, compute_dtype: torch.dtype):
    """The BitsAndBytesConfig for the quantization asked for, or None for full precision."""
    if quantization == "none":
        return None
    from transformers import BitsAndBytesConfig

    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quant_type,
        bnb_4bit_use_double_quant=double_quant,
        bnb_4bit_compute_dtype=compute_dtype,
    )


def lora_config(r: int, alpha: int, dropout: float, target_modules: list[str]):
    from peft import LoraConfig

    return LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=list(target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
