"""Serving one product at a time (the Space): the trained prompt, the same reader, checked input.

The prompt is built by `products.product_prompt`, the code `predict` uses, with the curation's
scrubbing and token cut; the price is read by the same `PriceReader` as evaluation. Nothing here
imports Lightning, so a Space needs only torch, transformers, peft and bitsandbytes.
"""

from __future__ import annotations

import warnings
from typing import get_args

import torch

from pricer.base.load import base_for_here, load_model, load_tokenizer
from pricer.base.precision import (
    emulated_bf16,
    emulated_cpu_bf16,
    emulated_cpu_fp16,
    on_the_device,
    resolve_dtype,
)
from pricer.base.quantization import Quantization
from pricer.data.products import MAX_CHARS, ProductError, product_prompt, product_record  # noqa: F401
from pricer.data.prompt import NEIGHBOR_FORMATS, make_prompt, neighbor_block, text_from_prompt, with_neighbors
from pricer.data.rules import CurationRules
from pricer.hub_calls import adapter_folder
from pricer.read.blend import Blend
from pricer.read.dense import CpuRead, can_read_dense, to_dense
from pricer.read.reader import Quote, Reader, reads_alone
from pricer.read.reading import Point, PriceReader
from pricer.read.recipe import PRECISIONS, Recipe, adapter_recipe, read_recipe
from pricer.read.saved_read import saved_read_out, saved_retriever
from pricer.read.tfidf import BlendError, TfidfPrice

# What an adapter without a pricer.json is read with, unless told otherwise: a recipe's defaults.
# (No blend: without a recipe there is no TF-IDF model beside the adapter either.)
DEFAULTS = {
    k: v
    for k, v in Recipe(base_model="-").reading_settings().items()
    if k
    not in (
        "rules",
        "blend_weight",
        "interval_scale",
        "blend_neighbors",
        "neighbors",
        "neighbor_title_tokens",
        "neighbor_format",
        "neighbor_min_similarity",
    )
}


class Pricer:
    """A base model with a trained adapter, loaded once, pricing one product per call.

    `Pricer.from_adapter(folder_or_hub_id)` builds it from the adapter's own recipe
    (`pricer.json`, written by fit): exactly the base, quantization, prompt rules and read-out
    the run measured. The constructor takes every setting explicitly.

    Args:
        base_model: A Hub id, a local folder or a local `.gguf` file, as in training.
        adapter: A Hub id or a local adapter folder; None prices with the bare base model.
        device: Where to run (CUDA when there is one).
        quantization: The base as the adapter was trained and measured on: 4-bit (on the CPU
            too, through bitsandbytes), 8-bit (CUDA only) or full precision (none). An adapter
            trained on a 4-bit base prices worse on a full-precision one.
        point: median or mean of the distribution, as the run measured it.
        coverage: Probability inside the reported interval.
        rules: The curation rules training used (scrubbing, token cut); the course's by default.
        quant_type: 4-bit data type, nf4 or fp4, as trained.
        double_quant: Whether the 4-bit scales were quantized too, as trained.
        compute_dtype: The 4-bit compute dtype (auto: the device's, by the training rule).
        beam: Digit prefixes the reader keeps per item (digit tokenizers).
        min_mass: Digit prefixes less likely than this are dropped.
        max_digits: Longest whole-dollar price read.
        cpu_read: dense: on the CPU, a 4-bit base's exact weights are dequantized once at load
            and the adapter merged into them (faster, the same prices to float rounding);
            4bit: read layer by layer as trained. A GPU always reads in 4-bit.
        blend_weight: The LLM's share of the price in log price, beside the TF-IDF model saved
            in the adapter folder (1: the LLM alone), as fit chose it on validation.
        interval_scale: The interval's width in log price, times this, as fit calibrated it.
        blend_neighbors: The nearest neighbours' share of the blend's partner in log price (0:
            the TF-IDF ridge alone), as fit chose it on validation.
        precision: The trainer precision the run was tested under: a mixed one (bf16-mixed,
            16-mixed) is read under the same autocast, with the LoRA layers kept unmerged as
            test read them; 32-true reads in the compute dtype.
        neighbors: Similar training items shown in the prompt, as the adapter trained with
            them (0: none), retrieved from the training items saved in the adapter folder.
        neighbor_title_tokens: Tokens of a neighbour's title at most, as trained.
        neighbor_format: How the prompt shows them (lines, summary or both), as trained.
        neighbor_min_similarity: A neighbour's least cosine similarity, as trained.
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
        quant_type: str = "nf4",
        double_quant: bool = True,
        compute_dtype: str = "auto",
        beam: int = 32,
        min_mass: float = 1e-4,
        max_digits: int = 3,
        cpu_read: CpuRead = "dense",
        blend_weight: float = 1.0,
        interval_scale: float = 1.0,
        precision: str = "32-true",
        blend_neighbors: float = 0.0,
        neighbors: int = 0,
        neighbor_title_tokens: int = 24,
        neighbor_format: str = "lines",
        neighbor_min_similarity: float = 0.0,
    ) -> None:
        # The settings may come from a JSON file: check them before anything loads.
        for name, value, allowed in (
            ("quantization", quantization, get_args(Quantization)),
            ("point", point, get_args(Point)),
            ("quant_type", quant_type, ("nf4", "fp4")),
            ("cpu_read", cpu_read, get_args(CpuRead)),
            ("precision", precision, PRECISIONS),
        ):
            if value not in allowed:
                raise ValueError(f"Pricer: {name} must be one of {allowed}, got {value!r}")
        if not 0 < coverage < 1:
            raise ValueError(f"Pricer: coverage must be between 0 and 1, got {coverage!r}")
        numbers = all(
            isinstance(v, (int, float)) and not isinstance(v, bool)
            for v in (blend_weight, interval_scale, blend_neighbors)
        )
        if (
            not numbers
            or not 0 <= blend_weight <= 1
            or not interval_scale > 0
            or not 0 <= blend_neighbors <= 1
        ):
            raise ValueError(
                f"Pricer: blend_weight and blend_neighbors must be in [0, 1] and interval_scale positive, "
                f"got {blend_weight!r}, {blend_neighbors!r} and {interval_scale!r}"
            )
        blend = Blend(float(blend_weight), float(interval_scale), float(blend_neighbors))
        partner = None
        if blend.uses_tfidf:
            if not adapter:
                raise BlendError(
                    "Pricer: blend_weight under 1 needs an adapter folder holding its TF-IDF model"
                )
            partner = TfidfPrice.load(adapter)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        tested, precision = precision, on_the_device(precision, self.device.type)
        read_as = "read so" if precision == tested else f"read under {precision} as a CPU reads it"
        emulated = emulated_bf16(precision, self.device) if self.device.type == "cuda" else None
        if emulated:
            warnings.warn(
                f"Pricer: the adapter was tested under {precision}, and is read so here, but {emulated} "
                "has no bf16 tensor cores and emulates bf16, several times slower; precision='16-mixed' "
                "reads natively, with prices that may differ from the ones its test measured",
                UserWarning,
                stacklevel=2,
            )
        cpu = self.device.type == "cpu"
        emulated = emulated_cpu_bf16(precision) or emulated_cpu_fp16(precision) if cpu else None
        if emulated:
            kind = "bf16" if "bf16" in str(precision) else "fp16"
            warnings.warn(
                f"Pricer: the adapter was tested under {tested}, and is {read_as} here, but {emulated} "
                f"emulates {kind}, far slower than fp32; precision='32-true' reads at full speed, with "
                "prices that may differ by cents from the ones its test measured",
                UserWarning,
                stacklevel=2,
            )
        if isinstance(neighbors, bool) or not isinstance(neighbors, int) or neighbors < 0:
            raise ValueError(f"Pricer: neighbors must be a whole number, 0 or more, got {neighbors!r}")
        tokens = neighbor_title_tokens
        if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
            raise ValueError(f"Pricer: neighbor_title_tokens must be a positive whole number, got {tokens!r}")
        if neighbor_format not in NEIGHBOR_FORMATS:
            raise ValueError(
                f"Pricer: neighbor_format must be one of {', '.join(NEIGHBOR_FORMATS)}, got {neighbor_format!r}"
            )
        similarity = neighbor_min_similarity
        if (
            isinstance(similarity, bool)
            or not isinstance(similarity, (int, float))
            or not 0 <= similarity < 1
        ):
            raise ValueError(f"Pricer: neighbor_min_similarity must be in [0, 1), got {similarity!r}")
        if neighbors and not adapter:
            raise BlendError("Pricer: neighbors need an adapter folder holding the training items")
        self.rules = rules or CurationRules()
        self.base_model, self.adapter = base_model, adapter
        self.tokenizer = load_tokenizer(base_model)
        self.tokenizer.padding_side = "left"
        self.neighbors, self.neighbor_format = neighbors, neighbor_format
        self.neighbor_min_similarity = float(neighbor_min_similarity)
        self.retriever = saved_retriever(adapter, self.tokenizer, tokens, partner) if neighbors else None
        # The device's native dtype, by the rule training uses: fp16 on a T4, bf16 from Ampere
        # on, fp32 on the CPU.
        self.dtype = resolve_dtype(compute_dtype, self.device)
        # as training and fit's test loaded and prepared it
        quantized = (quantization, quant_type, double_quant, compute_dtype, self.device)
        model = load_model(base_model, *quantized, adapter or None)
        digits = PriceReader(self.tokenizer, max_digits=max_digits, beam=beam, min_mass=min_mass)
        alone = reads_alone(precision, self.dtype)
        self.reader = Reader(digits, point, coverage, blend, partner, precision, alone)
        if cpu_read == "dense" and can_read_dense(model, self.device):
            # under autocast a merged LoRA update would be rounded with the 16-bit weights
            to_dense(model, merge=self.reader.autocast is None)
        self.model = model.eval()

    @property
    def point(self) -> Point:
        return self.reader.point

    @property
    def coverage(self) -> float:
        return self.reader.coverage

    @property
    def blend(self) -> Blend:
        """The blend fit chose, as the reader applies it (one copy of it, the reader's)."""
        return self.reader.blend

    @classmethod
    def from_adapter(
        cls, adapter: str, base_model: str | None = None, device: str | None = None, **settings
    ) -> Pricer:
        """The adapter as its run measured it, from its `pricer.json`: a local folder or a Hub id.

        `base_model` replaces the recipe's base (a local copy, say); other settings given here
        replace the recipe's too. An adapter without a recipe (another tool's peft adapter) needs `base_model`, and is read with pricer's defaults for whatever is not
        given, with a warning that names them.
        """
        folder = adapter_folder(adapter)
        recipe = read_recipe(folder)
        if recipe is None:
            if base_model is None:
                adapter_recipe(folder, "adapter")  # says what the folder is and what to do
            defaults = {k: v for k, v in DEFAULTS.items() if k not in settings}
            if defaults:
                shown = ", ".join(f"{k}={v!r}" for k, v in defaults.items())
                warnings.warn(
                    f"{adapter}: no pricer.json beside the adapter; reading it with pricer's defaults "
                    f"{shown}. Pass them to Pricer.from_adapter if it was trained or measured otherwise.",
                    UserWarning,
                    stacklevel=2,
                )
            return cls(base_model, str(folder), device, **{**DEFAULTS, **settings})
        # the files checked, one warning if the blend's are missing; the constructor loads them
        read_out = saved_read_out(folder, with_items=False, load=False)
        measured = {
            **recipe.reading_settings(),
            "blend_weight": read_out.blend.weight,
            "interval_scale": read_out.blend.interval_scale,
            "blend_neighbors": read_out.blend.neighbors,
        }
        pricer = cls(base_model or base_for_here(recipe), str(folder), device, **{**measured, **settings})
        pricer.recipe = recipe
        return pricer

    def quote(
        self, title: str | None, description: str | None, features: str = "", details: str = ""
    ) -> Quote:
        """The price of one product; raises ProductError for input that cannot be priced."""
        record = product_record(title, description, features, details)
        _, prompt = product_prompt(record, self.rules, self.tokenizer)
        return self.quote_prompt(prompt)

    def quote_prompt(self, prompt: str) -> Quote:
        """The price of one prompt as curation writes it (a curated split's `prompt` column):
        what `quote` reads once it has built the prompt from the product's fields."""
        text = text_from_prompt(prompt)
        # a neighbour block the prompt holds is left out, as predict leaves it out: the adapter's
        # prompts show the similar training items its own index retrieves, as it trained
        prompt = make_prompt(text)
        found: list[tuple[str, float]] = []
        if self.retriever is not None:
            (found,) = self.retriever.neighbors([text], self.neighbors, self.neighbor_min_similarity)
            prompt = with_neighbors(prompt, neighbor_block(found, self.neighbor_format))
        encoded = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=True)
        ids = encoded["input_ids"].to(self.device)
        mask = encoded["attention_mask"].to(self.device)
        (quote,) = self.reader.price(self.model, ids, mask, [text])
        quote.prompt, quote.neighbors = prompt, found
        return quote
