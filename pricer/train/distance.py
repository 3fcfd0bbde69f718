"""A distance-aware term on the price tokens, added to cross-entropy.

Cross-entropy scores only the probability of the true token: with $100 the truth, mass on $101
costs as much as mass on $900. The expected distance between the model's distribution over
number tokens and the true number does not: at each position whose label is a number token, the
distribution over those tokens (renormalised, as the reader reads it) and the absolute distance
of each from the truth, in the tokens' own values, divided by the largest so that the term is in
[0, 1]. For a tokenizer with a token for each whole number 0-999 (Llama 3) that is the whole
dollar price at one position; for one digit a token (SmolLM2) it is each digit's, as Number
Token Loss does (arXiv 2411.02083, its Wasserstein form on ordinal digits).
"""

from __future__ import annotations

import torch


class PriceDistance:
    """The expected distance on the number tokens of a tokenizer.

    Args:
        number_ids: The token of each value 0..n-1 (whole numbers, or digits 0-9).
    """

    def __init__(self, number_ids: torch.Tensor) -> None:
        self.number_ids = torch.as_tensor(number_ids, dtype=torch.long)
        values = torch.arange(len(self.number_ids), dtype=torch.float32)
        self.distances = (values[None, :] - values[:, None]).abs() / (len(values) - 1)

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The summed expected distance over the rows whose target is a number token (fp32).

        logits: (rows, vocab), the head's output at the completion positions; targets: (rows,).
        """
        ids = self.number_ids.to(targets.device)
        match = targets[:, None] == ids[None, :]
        rows = match.any(-1)
        if not bool(rows.any()):
            return logits.new_zeros((), dtype=torch.float32)
        truth = match[rows].float().argmax(-1)
        probs = torch.softmax(logits[rows][:, ids].float(), dim=-1)
        return (probs * self.distances.to(logits.device)[truth]).sum()
