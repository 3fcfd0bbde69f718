"""Flat config fields turned into library objects, in one place (as TRL's get_*_config)."""

from __future__ import annotations

from typing import Literal

import torch

from pricer.options import OptionError

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
            f"model.quantization.weights={quantization} needs bitsandbytes, which cannot be loaded "
            f"here ({error}); install bitsandbytes>=0.46 or set model.quantization.weights=none"
        ) from error
    if quantization == "8bit" and device.type == "cpu":
        raise QuantizationUnavailable(
            "model.quantization.weights=8bit does not run on the CPU; use 4bit (bitsandbytes>=0.46 runs "
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


def add_lora(base, r: int, alpha: int, dropout: float, target_modules: list[str], base_model: str):
    """A new LoRA adapter on `base`; one line naming the base's linear layers when a target
    module is not among them."""
    from peft import get_peft_model

    try:
        return get_peft_model(base, lora_config(r, alpha, dropout, target_modules))
    except ValueError as error:  # peft's NoMatchingPeftModuleError is one
        if "not found in the base model" not in str(error):
            raise
        linear = sorted(
            {n.rsplit(".", 1)[-1] for n, m in base.named_modules() if isinstance(m, torch.nn.Linear)}
        )
        raise OptionError(
            f"model.lora.target_modules {list(target_modules)}: not in {base_model}; its "
            f"linear layers are {', '.join(linear)}"
        ) from None
