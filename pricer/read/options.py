"""How prices are read, as the CLI shows the option groups (`model.read`, `model.blend`): each a
small dataclass whose docstring is its `--help`, its ranges jsonargparse's types."""

from __future__ import annotations

from dataclasses import dataclass

from jsonargparse.typing import NonNegativeInt, OpenUnitInterval, PositiveInt

from pricer.options import Fraction
from pricer.read.dense import CpuRead
from pricer.read.distribution import Point


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
        calibrate_interval: Scale the interval to its coverage. When its validation
            coverage misses interval_coverage by more than 5 points, its width in log price is
            scaled to the coverage asked for.
        head_layers: A price head on this many last layers. A ridge on log price, fitted on
            the train split's states, mixed in at the weight validation chooses; 0: none.
    """

    enabled: bool = True
    calibrate_interval: bool = True
    head_layers: NonNegativeInt = 0
