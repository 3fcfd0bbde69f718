"""Serving one product at a time (the Space): the trained prompt, the same reader, checked input.

The prompt is built by `products.product_prompt`, the code `predict` uses, with the curation's
scrubbing and token cut; the price is read by the same `PriceReader` as evaluation. Nothing here
imports Lightning, so a Space needs only torch, transformers, peft and bitsandbytes.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import get_args

import numpy as np
import torch

from pricer.base_model import load_tokenizer, model_source
from pricer.precision import resolve_dtype
from pricer.products import product_prompt
from pricer.quantization import Quantization, bnb_config, check_bitsandbytes
from pricer.reading import Point, PriceDistribution, PriceReader
from pricer.rules import CurationRules

MAX_CHARS = 5_000  # per field: far more than the 160 tokens the model reads


class ProductError(ValueError):
    """Input a person typed that cannot be priced; the message says which field and why."""


def _clean_field(name: str, value: str | None) -> str:
    text = unicodedata.normalize("NFKC", value or "").strip()
    if len(text) > MAX_CHARS:
        raise ProductError(
            f"The {name} is {len(text):,} characters long; please keep it under {MAX_CHARS:,}."
        )
    odd = sorted(
        {c for c in text if unicodedata.category(c) in ("Cc", "Cs", "Co", "Cn") and c not in "\n\t\r"}
    )
    if odd:
        shown = ", ".join(f"U+{ord(c):04X}" for c in odd[:3])
        raise ProductError(
            f"The {name} contains characters that cannot be read ({shown}); please remove them."
        )
    return text


def product_record(title: str | None, description: str | None, features: str = "", details: str = "") -> dict:
    """A raw-metadata-like record from what a person typed, checked field by field."""
    fields = {
        "title": _clean_field("title", title),
        "description": _clean_field("description", description),
        "features": _clean_field("features", features),
        "details": _clean_field("details", details),
    }
    if not fields["title"] and not fields["description"]:
        raise ProductError("Please enter a product title or description to price.")
    if not any(c.isalnum() for c in " ".join(fields.values())):
        raise ProductError("Please describe the product in words: the text has no letters or digits.")
    details_lines = [line.split(":", 1) for line in fields["details"].splitlines() if line.strip()]
    return {
        "title": fields["title"],
        "description": [fields["description"]] if fields["description"] else [],
        "features": [line.strip() for line in fields["features"].splitlines() if line.strip()],
        "details": {k.strip(): (v[0].strip() if v else "") for k, *v in details_lines},
    }


BIN_EDGES = (0, 10, 20, 50, 100, 200, 500, 1000)


def bin_labels(edges: tuple[float, ...] = BIN_EDGES) -> list[str]:
    """ "<$10", "$10-20", ..., "$500+": the chart's price ranges, in order."""
    inner = [f"${low:g}-{high:g}" for low, high in zip(edges[1:-2], edges[2:-1], strict=True)]
    return [f"<${edges[1]:g}", *inner, f"${edges[-2]:g}+"]


@dataclass
class Quote:
    """A predicted price with its interval and the distribution it was read from."""

    price: float
    low: float
    high: float
    distribution: PriceDistribution
    prompt: str

    def bins(self, edges: tuple[float, ...] = BIN_EDGES) -> list[tuple[str, float]]:
        """The distribution's probability in price ranges, for a small chart."""
        probs = self.distribution.normalised
        prices = self.distribution.prices
        return [
            (label, float(probs[(prices >= low) & (prices < high)].sum()))
            for label, low, high in zip(bin_labels(edges), edges[:-1], edges[1:], strict=True)
        ]


class Pricer:
    """A base model with a trained adapter, loaded once, pricing one product per call.

    Args:
        base_model: A Hub id, a local folder or a local `.gguf` file, as in training.
        adapter: A Hub id or a local adapter folder; None prices with the bare base model.
        device: Where to run (CUDA when there is one).
        quantization: The base as the adapter was trained and measured on: 4-bit NF4 (on the
            CPU too, through bitsandbytes), 8-bit (CUDA only) or full precision (none). An
            adapter trained on a 4-bit base prices worse on a full-precision one (issue 8).
        point: median or mean of the distribution, as the run measured it.
        coverage: Probability inside the reported interval.
        rules: The curation rules training used (scrubbing, token cut); the course's by default.
    """

    def __init__(
        self,
        base_model: str,
        adapter: str | None,
        device: str | None = None,
        quantization: Quantization = "4bit",
        point: Point = "median",
        coverage: float = 0.8,
        rules: CurationRules | None = None,
    ) -> None:
        from transformers import AutoModelForCausalLM

        # The settings come from a JSON file: check them before anything loads.
        for name, value, allowed in (
            ("quantization", quantization, get_args(Quantization)),
            ("point", point, get_args(Point)),
        ):
            if value not in allowed:
                raise ValueError(f"Pricer: {name} must be one of {allowed}, got {value!r}")
        if not 0 < coverage < 1:
            raise ValueError(f"Pricer: coverage must be between 0 and 1, got {coverage!r}")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        check_bitsandbytes(quantization, self.device)
        self.point, self.coverage = point, coverage
        self.rules = rules or CurationRules()
        self.tokenizer = load_tokenizer(base_model)
        self.tokenizer.padding_side = "left"
        # The device's native dtype, by the rule training uses: fp16 on a T4, bf16 from Ampere
        # on, fp32 on the CPU.
        self.dtype = resolve_dtype("auto", self.device)
        kwargs: dict = {"dtype": self.dtype, "device_map": {"": self.device}}
        if quantization != "none":
            kwargs["quantization_config"] = bnb_config(quantization, "nf4", True, self.dtype)
        model = AutoModelForCausalLM.from_pretrained(model_source(base_model), **kwargs)
        if adapter:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, adapter)
        self.model = model.eval()
        self.reader = PriceReader(self.tokenizer)

    def quote(
        self, title: str | None, description: str | None, features: str = "", details: str = ""
    ) -> Quote:
        """The price of one product; raises ProductError for input that cannot be priced."""
        record = product_record(title, description, features, details)
        _, prompt = product_prompt(record, self.rules, self.tokenizer)
        encoded = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=True)
        ids = encoded["input_ids"].to(self.device)
        mask = encoded["attention_mask"].to(self.device)
        (distribution,) = self.reader.read(self.model, ids, mask)
        low, high = distribution.interval(self.coverage)
        return Quote(float(distribution.point(self.point)), low, high, distribution, prompt)


def interval_text(quote: Quote, coverage: float) -> str:
    return f"{coverage:.0%} likely between ${quote.low:,.0f} and ${quote.high:,.0f}"


def bins_frame(quote: Quote):
    import pandas as pd

    rows = quote.bins()
    return pd.DataFrame(
        {"price range": [r for r, _ in rows], "probability": np.round([p for _, p in rows], 4)}
    )
