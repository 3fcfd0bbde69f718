"""PriceModel's options, grouped as the CLI shows them (`model.lora.r`, `model.read.beam`, ...):
each group lives in the earliest stage that uses it (`base/options.py`, `read/options.py`), the
optimizer's here.

Each group is a small dataclass whose docstring is its `--help`; the ranges are jsonargparse's
types, checked when a config is parsed. The module and its checkpoints hold each group as the
config writes it (`hparams["lora"]["r"]` is `model.lora.r`), so a checkpoint's settings read
back into the options as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from jsonargparse.typing import NonNegativeFloat, PositiveFloat

from pricer.base.options import LoraOptions, QuantizationOptions
from pricer.options import Fraction, OptionError
from pricer.read.options import BlendOptions, ReadOptions


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
