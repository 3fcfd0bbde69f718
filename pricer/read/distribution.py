"""Reading a price as a distribution, not a regex over three sampled tokens.

Two tokenizer kinds:
- whole numbers: every number 0-999 is one token (Llama 3). One forward pass over the prompt;
  the logits at the "$" position are the whole distribution over whole-dollar prices.
- digits: numbers split into digit tokens (SmolLM2). A batched, pruned search extends digit
  prefixes with the KV cache, one digit per pass; a prefix ends when the model writes anything
  but a digit (the decimal point). The prefixes of a prompt share its row as a tree (a 4D
  attention mask), so the prompt's cache is never copied per prefix. Prefixes below `min_mass`, or beyond the `beam` likeliest of
  an item, are dropped and their mass is counted in `left_out`.

Either way every input gets a distribution, so every input gets a number: no parse failures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from pricer.base.head import head_in_its_dtype
from pricer.read.number_tokens import number_tokens
from pricer.read.price_head import last_token_states

Point = Literal["median", "mean"]


@dataclass
class PriceDistribution:
    """Probabilities of whole-dollar prices; `left_out` is the mass the reading did not place
    (non-number tokens, numbers over `max_digits`, pruned prefixes)."""

    prices: np.ndarray
    probs: np.ndarray
    left_out: float
    features: np.ndarray | None = None  # the price head's input, when a read asked for it

    @property
    def normalised(self) -> np.ndarray:
        total = self.probs.sum()
        return self.probs / total if total > 0 else np.full(len(self.probs), 1 / len(self.probs))

    def quantile(self, q: float) -> float:
        """The smallest price whose cumulative probability reaches q."""
        cumulative = np.cumsum(self.normalised)
        index = int(np.searchsorted(cumulative, q - 1e-12, side="left"))
        return float(self.prices[min(index, len(self.prices) - 1)])

    @property
    def median(self) -> float:
        return self.quantile(0.5)

    @property
    def mean(self) -> float:
        return float((self.prices * self.normalised).sum())

    def point(self, kind: Point = "median") -> float:
        return self.median if kind == "median" else self.mean

    def interval(self, coverage: float = 0.8) -> tuple[float, float]:
        tail = (1 - coverage) / 2
        return self.quantile(tail), self.quantile(1 - tail)


def _takes(model, argument: str) -> bool:
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return argument in inspect.signature(base.forward).parameters


def _cache_argument(model) -> str:
    """transformers 5.2x renamed `past_key_values` to `cache` (the old name goes in 5.40)."""
    return "cache" if _takes(model, "cache") else "past_key_values"


def _returned_cache(out):
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


# Fewer shared tokens than this are not worth a forward pass of their own.
MIN_SHARED_PREFIX = 4


def _shared_prefix(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> int:
    """How many first tokens every left-padded prompt shares, at most all but each prompt's
    last (the batch pass must read every row's last position)."""
    width = input_ids.shape[1]
    lengths = attention_mask.long().sum(-1)
    shortest = int(lengths.min())
    if shortest < 2:
        return 0
    starts = (width - lengths)[:, None] + torch.arange(shortest - 1, device=input_ids.device)[None]
    heads = input_ids.gather(1, starts)  # each row's first tokens
    same = (heads == heads[:1]).all(0).long()
    return int(same.cumprod(0).sum())


def _with_features(read: list[PriceDistribution], out, layers: int) -> list[PriceDistribution]:
    """The distributions, each with its prompt's price head features when `layers` asks."""
    if layers:
        for distribution, row in zip(read, last_token_states(out.hidden_states, -1, layers), strict=True):
            distribution.features = row
    return read


class PriceReader:
    """Reads price distributions from a causal LM after prompts ending in "Price is $".

    Args:
        tokenizer: The base model's tokenizer (decides the kind of reading).
        max_digits: Longest whole-dollar price read (3: up to $999, the curation's range).
        beam: Digit prefixes kept per item at each step.
        min_mass: Prefixes less likely than this are dropped (their mass is reported).
        share_prefix: Compute the first tokens every prompt of a batch shares (the question)
            once, and the batch from their KV cache: the same reads in fp32; in 16-bit the
            changed rounding moves prices, so it is off by default.
    """

    def __init__(
        self,
        tokenizer,
        max_digits: int = 3,
        beam: int = 32,
        min_mass: float = 1e-4,
        share_prefix: bool = False,
    ) -> None:
        self.tokenizer = tokenizer
        self.max_digits = max_digits
        self.beam = beam
        self.min_mass = min_mass
        self.share_prefix = share_prefix
        self.kind, ids = number_tokens(tokenizer, max_digits)
        if self.kind == "whole":
            self.number_ids = torch.tensor(ids)
        else:
            self.digit_ids = torch.tensor(ids)

    @torch.no_grad()
    def read(
        self, model, input_ids: torch.Tensor, attention_mask: torch.Tensor, layers: int = 0
    ) -> list[PriceDistribution]:
        """Distributions for a batch of left-padded prompts (the LM head in its own dtype, outside
        autocast, as training runs it); with `layers`, each with the price head's features."""
        with head_in_its_dtype(model):
            return self._read(model, input_ids, attention_mask, layers)

    def _read(self, model, input_ids, attention_mask, layers: int = 0) -> list[PriceDistribution]:
        # Only the last position's logits: the LM head over every prompt position would be a fifth
        # of the pass on a small model (SmolLM2's 49k vocabulary), all of it thrown away.
        out, prompt_mask = self._prompt_pass(model, input_ids, attention_mask, keep=1, layers=layers)
        probs = out.logits[:, -1].float().softmax(-1)
        if self.kind == "whole":
            return _with_features(self._whole(probs), out, layers)
        return _with_features(self._digits(model, probs, _returned_cache(out), prompt_mask), out, layers)

    @torch.no_grad()
    def features(
        self, model, input_ids: torch.Tensor, attention_mask: torch.Tensor, layers: int
    ) -> np.ndarray:
        """The price head's features of a batch of left-padded prompts, from the pass `read`
        starts with (`price_head.last_token_states`), without reading a price."""
        with head_in_its_dtype(model):
            out, _ = self._prompt_pass(model, input_ids, attention_mask, keep=1, layers=layers)
        return last_token_states(out.hidden_states, -1, layers)

    @torch.no_grad()
    def read_and_score(
        self,
        model,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        completion_ids: torch.Tensor,
        completion_mask: torch.Tensor,
    ) -> tuple[list[PriceDistribution], torch.Tensor, torch.Tensor]:
        """`read`, and the summed cross-entropy of each prompt's own completion (the true price)
        with the number of its tokens, from the same forward pass.

        The completions ride after the left-padded prompts (padded on the right), so every
        prompt still ends at the same column: the logits there are `read`'s, the next ones score
        the completion, and the KV cache, cropped back to the prompts, carries the digit search
        as in `read`. The loss costs a few positions of the pass, not a second pass over prompt
        and price (which was 40% of a validation on SmolLM2).
        """
        with head_in_its_dtype(model):
            return self._read_and_score(model, input_ids, attention_mask, completion_ids, completion_mask)

    def _read_and_score(self, model, input_ids, attention_mask, completion_ids, completion_mask):
        width = completion_ids.shape[1]
        out, prompt_mask = self._prompt_pass(
            model, input_ids, attention_mask, completion_ids, completion_mask, keep=width + 1
        )
        logits = out.logits[:, -(width + 1) :]
        scored = completion_mask.bool()
        loss_sum = torch.nn.functional.cross_entropy(
            logits[:, :width][scored].float(), completion_ids[scored], reduction="sum"
        )
        probs = logits[:, 0].float().softmax(-1)
        if self.kind == "whole":
            return self._whole(probs), loss_sum, scored.sum()
        cache = _returned_cache(out)
        if width:
            cache.crop(-width)  # a negative count: the tokens to remove, in every transformers version
        return self._digits(model, probs, cache, prompt_mask), loss_sum, scored.sum()

    def _prompt_pass(
        self,
        model,
        input_ids,
        attention_mask,
        after_ids=None,
        after_mask=None,
        keep: int = 1,
        layers: int = 0,
    ):
        """The forward pass over left-padded prompts (and tokens riding after them, padded on the
        right), with the logits of the last `keep` positions (and every layer's hidden states
        when the price head reads `layers` of them); and the prompts' mask as the returned cache
        lays them out, for the digit search.

        With `share_prefix`, the first tokens every prompt shares are computed once, as one row,
        and the batch goes on from their KV cache: each row is then the shared prefix, its own
        left padding (a hole in the mask) and the rest of its prompt, with positions that count
        real tokens only, so every token sees what it saw before, at the same position.
        """
        batch, width = input_ids.shape
        if after_ids is None:
            after_ids = input_ids.new_zeros((batch, 0))
            after_mask = attention_mask.new_zeros((batch, 0))
        after_mask = after_mask.to(attention_mask.dtype)
        shared = _shared_prefix(input_ids, attention_mask) if self.share_prefix and batch > 1 else 0
        options = {"logits_to_keep": keep} if _takes(model, "logits_to_keep") else {}
        if layers:
            options["output_hidden_states"] = True
        if shared < MIN_SHARED_PREFIX:
            mask = torch.cat([attention_mask, after_mask], dim=1)
            out = model(
                input_ids=torch.cat([input_ids, after_ids], dim=1),
                attention_mask=mask,
                position_ids=(mask.long().cumsum(-1) - 1).clamp(min=0),
                use_cache=self.kind == "digits",
                **options,
            )
            return out, attention_mask
        lengths = attention_mask.long().sum(-1).tolist()
        first = width - lengths[0]
        prefix = input_ids[:1, first : first + shared]
        positions = torch.arange(shared, device=input_ids.device)[None]
        cache = _returned_cache(model(input_ids=prefix, position_ids=positions, use_cache=True))
        cache.batch_repeat_interleave(batch)
        rest = width - shared  # the longest prompt's rest; the others are padded on the left
        rest_ids = torch.full(
            (batch, rest), int(input_ids[0, -1]), dtype=input_ids.dtype, device=input_ids.device
        )
        rest_mask = attention_mask.new_zeros((batch, rest))
        for row, length in enumerate(lengths):
            rest_ids[row, rest - (length - shared) :] = input_ids[row, width - length + shared :]
            rest_mask[row, rest - (length - shared) :] = 1
        prompt_mask = torch.cat([attention_mask.new_ones((batch, shared)), rest_mask], dim=1)
        mask = torch.cat([prompt_mask, after_mask], dim=1)
        out = model(
            input_ids=torch.cat([rest_ids, after_ids], dim=1),
            attention_mask=mask,
            position_ids=(mask.long().cumsum(-1) - 1)[:, shared:],
            use_cache=True,
            **{_cache_argument(model): cache},
            **options,
        )
        return out, prompt_mask

    def _whole(self, probs: torch.Tensor) -> list[PriceDistribution]:
        prices = np.arange(len(self.number_ids), dtype=np.float64)
        numbers = probs[:, self.number_ids.to(probs.device)].cpu().double().numpy()
        return [PriceDistribution(prices, row, float(max(0.0, 1 - row.sum()))) for row in numbers]

    def _digits(self, model, probs, cache, attention_mask) -> list[PriceDistribution]:
        """The pruned digit search as a tree: each row's live prefixes are appended to that row
        (one new position per prefix and depth) and a 4D mask lets each see only its prompt and
        its own earlier digits. The prompt's KV cache is never copied per prefix."""
        batch, device = probs.shape[0], probs.device
        digit_ids = self.digit_ids.to(device)
        finished: list[dict[int, float]] = [{} for _ in range(batch)]
        left_out = (1 - probs[:, digit_ids].sum(-1)).double().cpu().numpy()  # no number at all
        first = probs[:, digit_ids].double().cpu().numpy()
        # live prefixes: (item, value, mass, cache positions of the prefix's digits fed so far)
        live = self._prune([(i, d, first[i, d], ()) for i in range(batch) for d in range(10)], left_out)
        prompt = attention_mask.bool()
        next_position = attention_mask.long().sum(-1)  # the first digit follows the prompt's tokens
        dtype = model.get_input_embeddings().weight.dtype
        seen = prompt.shape[1]  # cache length so far
        for depth in range(1, self.max_digits + 1):
            if not live:
                break
            slots: list[int] = []
            count = [0] * batch
            for item, *_ in live:
                slots.append(count[item])
                count[item] += 1
            width = max(count)
            tokens = torch.full((batch, width), int(digit_ids[0]), dtype=torch.long, device=device)
            visible = torch.zeros((batch, width, seen + width), dtype=torch.bool, device=device)
            visible[:, :, :seen] = prompt[:, None, :]
            visible[:, torch.arange(width), seen + torch.arange(width)] = True  # itself (padding too)
            for (item, value, _, path), slot in zip(live, slots, strict=True):
                tokens[item, slot] = digit_ids[value % 10]
                if path:
                    visible[item, slot, list(path)] = True
            mask = torch.zeros(visible.shape, dtype=dtype, device=device)
            mask.masked_fill_(~visible, torch.finfo(dtype).min)
            positions = (next_position + depth - 1)[:, None].expand(batch, width)
            out = model(
                input_ids=tokens,
                attention_mask=mask[:, None],
                position_ids=positions,
                use_cache=True,
                **{_cache_argument(model): cache},
            )
            cache = _returned_cache(out)
            step = out.logits.float().softmax(-1)[..., digit_ids].double().cpu().numpy()
            children = []
            for (item, value, mass, path), slot in zip(live, slots, strict=True):
                p_digits = step[item, slot]
                p_end = max(0.0, 1.0 - float(p_digits.sum()))
                if mass * p_end > 0:
                    finished[item][value] = finished[item].get(value, 0.0) + mass * p_end
                if depth == self.max_digits or value == 0:
                    left_out[item] += mass * (1 - p_end)  # over max_digits, or a leading zero
                    continue
                node = (*path, seen + slot)
                children += [(item, value * 10 + d, mass * p_digits[d], node) for d in range(10)]
            seen += width
            prompt = torch.cat([prompt, torch.zeros((batch, width), dtype=torch.bool, device=device)], dim=1)
            live = self._prune(children, left_out)
        result = []
        for item in range(batch):
            prices = np.array(sorted(finished[item]), dtype=np.float64)
            if len(prices) == 0:  # every prefix pruned: still a number, the likeliest first digit
                prices, masses = np.array([float(first[item].argmax())]), np.array([0.0])
            else:
                masses = np.array([finished[item][int(p)] for p in prices])
            result.append(PriceDistribution(prices, masses, float(left_out[item])))
        return result

    def _prune(self, prefixes: list, left_out: np.ndarray) -> list:
        by_item: dict[int, list] = {}
        for prefix in prefixes:
            by_item.setdefault(prefix[0], []).append(prefix)
        kept = []
        for item, group in by_item.items():
            group.sort(key=lambda p: -p[2])
            for rank, prefix in enumerate(group):
                if rank < self.beam and prefix[2] > 0 and prefix[2] >= self.min_mass:
                    kept.append(prefix)
                else:
                    left_out[item] += prefix[2]
        return kept
