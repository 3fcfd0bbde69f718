"""Tokenized training batches: the loss falls on the completion (the price) alone."""

from __future__ import annotations

from dataclasses import dataclass

import torch

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


@dataclass
class PadCollator:
    """Pads a batch to its own longest sequence (dynamic padding), on the right; with
    `prompts`, also the prompts alone, on the left, for reading prices."""

    pad_token_id: int
    prompts: bool = False

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        length = max(len(e["input_ids"]) for e in examples)
        input_ids = torch.full((len(examples), length), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(examples), length), IGNORE_INDEX, dtype=torch.long)
        attention = torch.zeros((len(examples), length), dtype=torch.long)
        for row, example in enumerate(examples):
            n = len(example["input_ids"])
            input_ids[row, :n] = torch.as_tensor(example["input_ids"])
            labels[row, :n] = torch.as_tensor(example["labels"])
            attention[row, :n] = 1
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
        length = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), length), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), length), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            ids[row, length - len(prompt) :] = torch.as_tensor(prompt)
            mask[row, length - len(prompt) :] = 1
        width = max(len(c) for c in completions)
        completion_ids = torch.full((len(prompts), width), self.pad_token_id, dtype=torch.long)
        completion_mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, completion in enumerate(completions):
            completion_ids[row, : len(completion)] = torch.as_tensor(completion, dtype=torch.long)
            completion_mask[row, : len(completion)] = 1
        return {
            "prompt_ids": ids,
            "prompt_mask": mask,
            "completion_ids": completion_ids,
            "completion_mask": completion_mask,
        }
