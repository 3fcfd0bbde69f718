"""PriceModel's options, grouped as the CLI shows them (`model.lora.r`, `model.read.beam`, ...).

Each group is a small dataclass whose docstring is its `--help`; the ranges are jsonargparse's
types, checked when a config is parsed. The module and its checkpoints hold each group as the
config writes it (`hparams["lora"]["r"]` is `model.lora.r`), so a checkpoint's settings read
back into the options as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

from jsonargparse.typing import (
    NonNegativeFloat,
    OpenUnitInterval,
    PositiveFloat,
    PositiveInt,
    restricted_number_type,
)

from pricer.base.precision import ComputeDtype
from pricer.base.quantization import Quantization
from pricer.options import OptionError
from pricer.read.dense import CpuRead
from pricer.read.reading import Point

# [0, 1): a dropout, a warmup share, a probability mass
Fraction = restricted_number_type("Fraction", float, [(">=", 0), ("<", 1)], docstring="a number in [0, 1)")


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


@dataclass(frozen=True)
class OptimizerOptions:
    """AdamW (paged on a GPU) with linear warmup and cosine decay, one step a batch.

    Args:
        learning_rate: Peak learning rate.
        weight_decay: AdamW weight decay.
        warmup_ratio: Share of the optimizer steps spent warming up.
        max_grad_norm: Clip the gradients' norm to this. Before each step, as the course did;
            null or 0: unclipped.
    """

    learning_rate: PositiveFloat = 1e-4
    weight_decay: NonNegativeFloat = 0.001
    warmup_ratio: Fraction = 0.03
    max_grad_norm: NonNegativeFloat | None = 0.3


@dataclass(frozen=True)
class ReadOptions:
    """How a price is read from the model's distribution over price tokens (docs/reading.md).

    Args:
        point: median (least absolute error) or mean.
        interval_coverage: Probability inside the interval. 0.8: the 10th to 90th percentile.
        beam: Digit prefixes kept an item. When numbers split into digits.
        min_mass: Digit prefixes dropped below this. Their mass is reported.
        shared_prefix: The prompts' shared question once a batch. The same prices in fp32; in
            16 bits the changed rounding moves prices, so it is off by default.
        cpu: How the CPU reads a 4-bit base: dense or 4bit. dense: its exact 4-bit weights
            dequantized once a pass, the LoRA merged in fp32 (faster, the same prices to float
            rounding); 4bit: layer by layer, as trained. A GPU always reads in 4-bit.
    """

    point: Point = "median"
    interval_coverage: OpenUnitInterval = 0.8
    beam: PositiveInt = 32
    min_mass: Fraction = 1e-4
    shared_prefix: bool = False
    cpu: CpuRead = "dense"


@dataclass(frozen=True)
class BlendOptions:
    """What fit chooses on validation at its end, saved with the adapter (docs/reading.md).

    Args:
        enabled: Blend the LLM with a classical partner. In log price, with the TF-IDF ridge and
            its 5 nearest train items fitted on the train split, at the weights with the lowest
            validation MAE (the LLM's may be 1, the LLM alone); false: the LLM alone.
        calibrate_interval: Widen or narrow the interval to its coverage. When its validation
            coverage misses interval_coverage by more than 5 points, its width in log price is
            scaled to the coverage asked for.
    """

    enabled: bool = True
    calibrate_interval: bool = True


GROUPS = {
    "quantization": QuantizationOptions,
    "lora": LoraOptions,
    "optimizer": OptimizerOptions,
    "read": ReadOptions,
    "blend": BlendOptions,
}


def _plain(value):
    """jsonargparse's range types are int and float subclasses: checkpoints hold plain ones."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def as_groups(**groups) -> dict[str, dict]:
    """Each group's fields as a plain dict, as a config writes them (a group left out: its
    defaults); what the module's hyperparameters and checkpoints hold."""
    out = {}
    for group, cls in GROUPS.items():
        options = groups.get(group)
        if options is None:
            options = cls()
        elif isinstance(options, dict):
            options = cls(**options)
        elif not isinstance(options, cls):
            raise OptionError(scalar_for_group(f"model.{group}", options))
        out[group] = {f.name: _plain(getattr(options, f.name)) for f in fields(cls)}
    return out


def scalar_for_group(key: str, value) -> str:
    """One line for a plain value given where a group of options goes (`model.blend: false`)."""
    shown = str(value).lower() if isinstance(value, bool) else value
    return f"{key} is a group of options, not a value ({shown!r}): set its fields ({key}.<name>)"


def check_groups(model) -> None:
    """One line for a plain value where a group of options goes (a config's `model.blend:
    false`), which jsonargparse lets through to a traceback."""
    for group, cls in GROUPS.items():
        value = model.get(group) if model is not None else None
        if value is not None and not hasattr(value, "keys") and not isinstance(value, cls):
            raise OptionError(scalar_for_group(f"model.{group}", value))
