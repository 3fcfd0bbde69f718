"""Serving one product at a time (the Space): the trained prompt, the same reader, checked input.

The prompt is built by `products.product_prompt`, the code `predict` uses, with the curation's
scrubbing and token cut; the price is read by the same `PriceReader` as evaluation. Nothing here
imports Lightning, so a Space needs only torch, transformers, peft and bitsandbytes.
"""

from __future__ import annotations

import warnings

import torch

from pricer.base.load import base_for_here, load_model, load_tokenizer
from pricer.base.precision import (
    emulated_bf16,
    emulated_cpu_bf16,
    emulated_cpu_fp16,
    on_the_device,
    resolve_dtype,
)
from pricer.data.products import MAX_CHARS, ProductError, product_prompt, product_record  # noqa: F401
from pricer.data.prompt import make_prompt, neighbor_block, text_from_prompt, with_neighbors
from pricer.hub_calls import adapter_folder
from pricer.read.adapter_files import saved_read_out, saved_retriever
from pricer.read.blend import Blend
from pricer.read.dense import can_read_dense, to_dense
from pricer.read.distribution import Point, PriceReader
from pricer.read.price_head import PriceHead
from pricer.read.quote import Quote, Reader, reads_alone
from pricer.read.recipe import Recipe, adapter_recipe, read_recipe
from pricer.read.tfidf import BlendError, TfidfPrice


class Pricer:
    """A base model with a trained adapter, loaded once, pricing one product per call.

    `Pricer.from_adapter(folder_or_hub_id)` builds it from the adapter's own recipe
    (`pricer.json`, written by fit): exactly the base, quantization, prompt rules, neighbours and
    read-out the run measured. The constructor takes such a recipe (`pricer.read.recipe.Recipe`:
    the options as a config writes them), checked before anything loads.

    Args:
        recipe: The base model, its quantization (an adapter trained on a 4-bit base prices worse
            on a full-precision one), the read-out, the curation rules and neighbours that shape
            the prompt, the blend and the precision its test read under.
        adapter: A local adapter folder; None prices with the bare base model.
        device: Where to run (CUDA when there is one).
    """

    def __init__(self, recipe: Recipe, adapter: str | None = None, device: str | None = None) -> None:
        recipe.check("Pricer")
        self.recipe = recipe
        blend = Blend(**recipe.blend)
        partner = None
        if blend.uses_tfidf:
            if not adapter:
                raise BlendError(
                    "Pricer: a blend weight under 1 needs an adapter folder holding its TF-IDF model"
                )
            partner = TfidfPrice.load(adapter)
        if blend.uses_head and not adapter:
            raise BlendError("Pricer: a price head weight over 0 needs an adapter folder holding the head")
        head = PriceHead.load(adapter) if blend.uses_head else None
        if recipe.neighbors and not adapter:
            raise BlendError("Pricer: neighbors need an adapter folder holding the training items")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        tested, precision = recipe.precision, on_the_device(recipe.precision, self.device.type)
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
        self.rules = recipe.curation_rules
        self.base_model, self.adapter = recipe.base_model, adapter
        self.tokenizer = load_tokenizer(recipe.base_model)
        self.tokenizer.padding_side = "left"
        self.neighbors, self.neighbor_format = recipe.neighbors, recipe.neighbor_format
        self.neighbor_min_similarity = float(recipe.neighbor_min_similarity)
        tokens = recipe.neighbor_title_tokens
        self.retriever = (
            saved_retriever(adapter, self.tokenizer, tokens, partner) if recipe.neighbors else None
        )
        q, read = recipe.quantization, recipe.read
        # The device's native dtype, by the rule training uses: fp16 on a T4, bf16 from Ampere
        # on, fp32 on the CPU.
        self.dtype = resolve_dtype(q["compute_dtype"], self.device)
        # as training and fit's test loaded and prepared it
        quantized = (q["weights"], q["type"], q["double_quant"], q["compute_dtype"], self.device)
        model = load_model(recipe.base_model, *quantized, adapter or None)
        digits = PriceReader(
            self.tokenizer, max_digits=recipe.max_digits, beam=read["beam"], min_mass=read["min_mass"]
        )
        alone = reads_alone(precision, self.dtype)
        self.reader = Reader(
            digits, read["point"], read["interval_coverage"], blend, partner, precision, alone, head
        )
        if read["cpu"] == "dense" and can_read_dense(model, self.device):
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

        `base_model` replaces the recipe's base (a local copy, say); `settings` replace the
        recipe's other options as it names them, a group in part (`read={"cpu": "4bit"}`,
        `precision="bf16-mixed"`). An adapter without a recipe (another tool's peft adapter)
        needs `base_model`, and is read with pricer's defaults for whatever is not given, with a
        warning that names them.
        """
        folder = adapter_folder(adapter)
        recipe = read_recipe(folder)
        if recipe is None:
            if base_model is None:
                adapter_recipe(folder, "adapter")  # says what the folder is and what to do
            recipe = Recipe(base_model=base_model)
            left = [name for name in ("quantization", "read", "precision") if name not in settings]
            if left:
                shown = ", ".join(f"{name}={getattr(recipe, name)!r}" for name in left)
                warnings.warn(
                    f"{adapter}: no pricer.json beside the adapter; reading it with pricer's defaults "
                    f"{shown}. Pass them to Pricer.from_adapter if it was trained or measured otherwise.",
                    UserWarning,
                    stacklevel=2,
                )
        else:
            saved_read_out(folder, with_items=False, load=False)  # the files beside it checked
            base_model = base_model or base_for_here(recipe)
        return cls(recipe.replaced(base_model=base_model, **settings), str(folder), device)

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
