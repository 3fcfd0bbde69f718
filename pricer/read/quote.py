"""A batch of prompts to prices: the LLM's distribution, its point and interval, then the blend.

The one read every price goes through: fit's validation reads for the blend, fit's test, the
`test` and `predict` commands (through `PriceModel`) and the Space (through `Pricer`). It owns
the read-out settings, the blend fit chose with its saved partner, and the trainer precision
the run was tested under (a mixed one is read under the same autocast). Its caller owns the
model, loaded for training or for serving, and the prompts' tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from pricer.read.blend import Blend
from pricer.read.distribution import Point, PriceDistribution, PriceReader
from pricer.read.price_head import PriceHead
from pricer.read.tfidf import BlendError

# Lightning's mixed precisions and the autocast dtype each reads under; the others read in the
# weights' own dtype
AUTOCAST = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}
FULL_PRECISIONS = ("32-true", "64-true")


def reads_alone(precision: str, compute_dtype: torch.dtype) -> bool:
    """Whether prompts are read one at a time: when any of the read is in 16 bits.

    In 16 bits the rounding of a prompt's matmuls and attention depends on the batch it is read
    in (its padding and the kernels its shape selects), so a batch of test prompts would read
    other prices than the Space reads for each alone. Read alone and unpadded, both compute the
    same operations on the same shapes, at the cost of the batch's speed (benchmarks/RESULTS.md
    has both figures). In fp32 a batch is kept for its speed, though its padding can tip the
    digit search's pruning and move a price by more than a cent (benchmarks/RESULTS.md).
    """
    return str(precision) not in FULL_PRECISIONS or compute_dtype in (torch.float16, torch.bfloat16)


@dataclass
class Quote:
    """One product's price: the served point and interval (the blend's, when fit chose one), the
    LLM's own before it, the distribution they were read from, and the prompt it was read from
    with the similar training items it showed (`partner` and `head`: the blend partner's and
    the price head's prices, when it reads them). Every read returns it: fit's test, `test`,
    `predict` and `Pricer.quote`."""

    price: float
    low: float
    high: float
    llm_price: float
    llm_low: float
    llm_high: float
    distribution: PriceDistribution
    blend: Blend = field(default_factory=Blend)
    partner: float | None = None
    head: float | None = None
    prompt: str = ""
    neighbors: list[tuple[str, float]] = field(default_factory=list)  # (title, price) shown

    def row(self) -> dict:
        """The six prices, as a report's or a prediction file's columns."""
        return {
            "predicted": self.price,
            "low": self.low,
            "high": self.high,
            "llm_predicted": self.llm_price,
            "llm_low": self.llm_low,
            "llm_high": self.llm_high,
        }

    def llm_row(self) -> dict:
        """The LLM's own price and interval, as predicted, low and high (before any blend)."""
        return {"predicted": self.llm_price, "low": self.llm_low, "high": self.llm_high}

    @property
    def prices(self) -> np.ndarray:
        """The distribution's prices where the blend moved them (its own without a blend)."""
        return self.blend.move(self.distribution.prices, self.llm_price, self.partner, self.head)


class Reader:
    """Prices a batch of tokenized prompts with a model.

    Args:
        price_reader: The digit-by-digit reader of the price's distribution.
        point: median or mean of the distribution.
        coverage: Probability inside the reported interval.
        blend: The LLM's share of the price beside its partner, and the interval's scale.
        partner: The TF-IDF model saved with the adapter; needed when the blend uses it.
        head: The price head saved with the adapter; needed when the blend mixes it in.
        precision: The trainer precision the run was tested under.
        alone: Read each prompt by itself, without padding (`reads_alone`), so its price does
            not depend on the batch it came in.
    """

    def __init__(
        self,
        price_reader: PriceReader,
        point: Point = "median",
        coverage: float = 0.8,
        blend: Blend | None = None,
        partner=None,
        precision: str = "32-true",
        alone: bool = False,
        head: PriceHead | None = None,
    ) -> None:
        self.price_reader, self.point, self.coverage = price_reader, point, coverage
        self.blend = blend or Blend()
        self.partner, self.head = partner, head
        if self.blend.uses_head and head is None:
            raise BlendError("the blend mixes in a price head, and none was given to read it")
        self.layers = head.layers if self.blend.uses_head else 0  # the head's features to read
        self.autocast = AUTOCAST.get(str(precision))
        self.alone = alone

    def distributions(self, model, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        """The LLM's price distribution for each prompt, read under the run's autocast."""
        with self.autocast_on(input_ids.device.type):
            if not self.alone or len(input_ids) == 1:
                return self.price_reader.read(model, input_ids, attention_mask, self.layers)
            reads = []
            for ids, mask in zip(input_ids, attention_mask, strict=True):
                real = mask.bool()  # a left-padded row's tokens, as the prompt tokenizes alone
                reads += self.price_reader.read(model, ids[real][None], mask[real][None], self.layers)
            return reads

    def features(self, model, input_ids: torch.Tensor, attention_mask: torch.Tensor, layers: int):
        """The price head's features of a batch of prompts, under the run's autocast (batched:
        fit reads the train split's so to fit the head)."""
        with self.autocast_on(input_ids.device.type):
            return self.price_reader.features(model, input_ids, attention_mask, layers)

    def autocast_on(self, device_type: str):
        """The run's autocast (none for a true precision): inside Lightning's own, the same one
        again, uncached as Lightning's is."""
        return torch.autocast(
            device_type, dtype=self.autocast, enabled=self.autocast is not None, cache_enabled=False
        )

    def price(
        self, model, input_ids: torch.Tensor, attention_mask: torch.Tensor, texts: list[str]
    ) -> list[Quote]:
        """Each prompt's Quote; `texts` are the prompts' product texts, the partner's input."""
        return self.priced(self.distributions(model, input_ids, attention_mask), texts)

    def priced(self, distributions: list[PriceDistribution], texts: list[str]) -> list[Quote]:
        """The Quotes of distributions already read (validation's, from its scoring pass)."""
        llm = np.array(
            [(d.point(self.point), *d.interval(self.coverage)) for d in distributions], dtype=np.float64
        ).reshape(-1, 3)
        partner = None
        if self.blend.uses_tfidf:
            partner = np.asarray(self.partner.predict(list(texts), self.blend.knn_share), dtype=np.float64)
        head = None
        if self.blend.uses_head:
            head = self.head.predict(np.stack([d.features for d in distributions]))
        point, low, high = self.blend.apply(*llm.T, partner, head)
        return [
            Quote(
                float(point[i]),
                float(low[i]),
                float(high[i]),
                *(float(v) for v in llm[i]),
                distribution=d,
                blend=self.blend,
                partner=None if partner is None else float(partner[i]),
                head=None if head is None else float(head[i]),
            )
            for i, d in enumerate(distributions)
        ]
