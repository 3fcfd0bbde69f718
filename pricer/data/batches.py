"""Tokenized training batches: the loss falls on the completion (the price) alone."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn.utils.rnn import pad_sequence

IGNORE_INDEX = -100


def tokenize_examples(batch: dict, tokenizer) -> dict:
    """Prompt and completion tokenized apart and joined, labels masked to the completion.

    Tokenizing the prompt alone is what inference does, so training sees the same prompt
    tokens; the completion is added without special tokens.
    """
    prompts = tokenizer(batch["prompt"], add_special_tokens=True)["input_ids"]
    completions = tokenizer(batch["completion"], add_special_tokens=False)["input_ids"]
    input_ids, labels = [], []
    for prompt, completion in zip(prompts, completions, strict=True):
        input_ids.append(prompt + completion)
        labels.append([IGNORE_INDEX] * len(prompt) + completion)
    return {"input_ids": input_ids, "labels": labels}


def pad(rows: list[list[int]], value: int, side: str = "right") -> torch.Tensor:
    """Rows of token ids as one tensor, padded with `value` to the longest, on `side`."""
    tensors = [torch.as_tensor(row, dtype=torch.long) for row in rows]
    return pad_sequence(tensors, batch_first=True, padding_value=value, padding_side=side)


def pad_with_mask(
    rows: list[list[int]], value: int, side: str = "right"
) -> tuple[torch.Tensor, torch.Tensor]:
    """`pad`, and the mask of the real tokens."""
    return pad(rows, value, side), pad([[1] * len(row) for row in rows], 0, side)


@dataclass
class PadCollator:
    """Pads a batch to its own longest sequence (dynamic padding), on the right; with
    `prompts`, also the prompts alone, on the left, for reading prices.

    torch's `pad_sequence` pads; transformers' DataCollatorForSeq2Seq would need the tokenizer
    (the T4 check has none), pads on the tokenizer's side (the Space sets it to the left) and
    refuses the string columns (title, category, text) the reports carry through.
    """

    pad_token_id: int
    prompts: bool = False

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        input_ids, attention = pad_with_mask([e["input_ids"] for e in examples], self.pad_token_id)
        labels = pad([e["labels"] for e in examples], IGNORE_INDEX)
        batch = {"input_ids": input_ids, "attention_mask": attention, "labels": labels}
        if "price" in examples[0]:
            batch["price"] = torch.tensor([float(e["price"]) for e in examples])
        for key in ("title", "category", "text"):
            if key in examples[0]:
                batch[key] = [e[key] for e in examples]
        if self.prompts:
            batch.update(self._prompts(examples))
        return batch

    def _prompts(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        """The prompts alone, padded on the left so every row ends at "Price is $", and their
        completions, padded on the right, to score in the same pass (`read_and_score`)."""
        prompts, completions = [], []
        for e in examples:
            pairs = list(zip(e["input_ids"], e["labels"], strict=True))
            prompts.append([t for t, label in pairs if label == IGNORE_INDEX])
            completions.append([t for t, label in pairs if label != IGNORE_INDEX])
        ids, mask = pad_with_mask(prompts, self.pad_token_id, side="left")
        completion_ids, completion_mask = pad_with_mask(completions, self.pad_token_id)
        return {
            "prompt_ids": ids,
            "prompt_mask": mask,
            "completion_ids": completion_ids,
            "completion_mask": completion_mask,
        }


def longest_batch(items, size: int, pad_token_id: int) -> dict[str, torch.Tensor]:
    """The `size` longest items (ties to the earlier one; repeated when there are fewer),
    collated as training batches are: the widest batch training can meet, padded (and so
    masked) as a real one is, for the batch size search's trial steps."""
    ids = [item["input_ids"] for item in items] if isinstance(items, list) else items["input_ids"]
    lengths = [len(row) for row in ids]  # a dataset's column at once, not row by row
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    chosen = [items[order[i % len(order)]] for i in range(size)]
    return PadCollator(pad_token_id)(chosen)
