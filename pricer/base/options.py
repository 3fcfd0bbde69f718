"""The base model's option groups, as the CLI shows them (`model.quantization`, `model.lora`):
each a small dataclass whose docstring is its `--help`, its ranges jsonargparse's types."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from jsonargparse.typing import PositiveInt

from pricer.base.precision import ComputeDtype
from pricer.base.quantization import Quantization
from pricer.options import Fraction


@dataclass(frozen=True)
class QuantizationOptions:
    """How the base model's weights are loaded.

    Args:
        weights: 4bit (QLoRA), 8bit or none (full precision).
        type: The 4-bit data type: nf4 (QLoRA's) or fp4.
        double_quant: Quantize the 4-bit scales too. About 0.4 bits a weight less.
        compute_dtype: auto, float32, bfloat16 or float16. The 4-bit matmuls' dtype; auto: fp16
            on a T4, bf16 on Ampere and later, fp32 on the CPU.
    """

    weights: Quantization = "4bit"
    type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = True
    compute_dtype: ComputeDtype = "auto"


@dataclass(frozen=True)
class LoraOptions:
    """The LoRA adapter trained on the frozen base.

    Args:
        r: LoRA rank.
        alpha: Scaling numerator (alpha / r).
        dropout: Dropout on the LoRA input.
        target_modules: Modules that get adapters. Default: q_proj, k_proj, v_proj, o_proj.
    """

    r: PositiveInt = 32
    alpha: PositiveInt = 64
    dropout: Fraction = 0.1
    target_modules: list[str] | None = None
