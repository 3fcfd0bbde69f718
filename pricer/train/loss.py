"""The training loss: cross-entropy on the price tokens alone, with the LM head computed only
where the loss is, and the distance-aware term when `model.price_distance` weights it."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pricer.base.head import head_outside_autocast
from pricer.data.batches import IGNORE_INDEX
from pricer.train.distance import PriceDistance


class CompletionLoss:
    """PriceModel's forward and loss (a mixin: it uses the module's model and hyperparameters)."""

    def forward(self, input_ids, attention_mask=None, labels=None):
        return self.model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)

    def completion_loss(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The summed loss of the completion tokens (cross-entropy, plus `price_distance` times
        the expected distance at the number tokens), and how many there are.

        Only the price tokens carry loss, so the LM head runs at their positions alone (as TRL
        does): the decoder's hidden states, then the head on the few rows that predict a label.
        Llama 3's 128k-token head at every one of ~180 positions would cost about 0.26 GiB a
        sample in fp16 and fp32 copies, which decides the T4's batch; here it is a few rows.
        """
        targets = labels[:, 1:]
        keep = targets != IGNORE_INDEX
        count = keep.sum()
        if not self.hparams.completion_logits or not plain_lm_head(self.model):
            logits = self(input_ids, attention_mask).logits[:, :-1][keep]
        else:
            base = self.model.get_base_model()
            hidden = base.get_decoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            logits = head_outside_autocast(base.get_output_embeddings(), hidden[:, :-1][keep])
        loss = F.cross_entropy(logits.float(), targets[keep], reduction="sum")
        if self.hparams.price_distance:
            loss = loss + self.hparams.price_distance * self.distance(logits, targets[keep])
        return loss, count

    @property
    def distance(self) -> PriceDistance:
        """The distance on this tokenizer's number tokens, as the reader reads them."""
        if self._distance is None:
            reader = self.reader
            self._distance = PriceDistance(reader.number_ids if reader.kind == "whole" else reader.digit_ids)
        return self._distance


def plain_lm_head(model) -> bool:
    """Whether the logits are the output embedding of the decoder's last hidden state, with no
    scaling or soft-capping after it (Llama, SmolLM2, Mistral, Qwen). Otherwise the full
    forward is used, so the loss is always the model's own."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = base.config
    scaled = any(
        getattr(config, k, None) not in (None, 1, 1.0) for k in ("final_logit_softcapping", "logit_scale")
    )
    return not scaled and hasattr(base, "get_decoder") and base.get_output_embeddings() is not None
