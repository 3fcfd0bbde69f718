"""The training loss: cross-entropy on the price tokens alone, with the LM head computed only
where the loss is, and the distance-aware term when `model.price_distance` weights it."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pricer.base.head import head_outside_autocast
from pricer.data.batches import IGNORE_INDEX
from pricer.train.distance import PriceDistance


def completion_loss(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    labels: torch.Tensor,
    completion_logits: bool = True,
    distance: PriceDistance | None = None,
    weight: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The summed loss of a batch's completion tokens (cross-entropy, plus `weight` times the
    expected `distance` at the number tokens), and how many there are.

    Only the price tokens carry loss, so with `completion_logits` the LM head runs at their
    positions alone (as TRL does): the decoder's hidden states, then the head on the few rows
    that predict a label. Llama 3's 128k-token head at every one of ~180 positions would cost
    about 0.26 GiB a sample in fp16 and fp32 copies, which decides the T4's batch; here it is a
    few rows. A head that is not plain (`plain_lm_head`) runs the model's own forward.
    """
    targets = labels[:, 1:]
    keep = targets != IGNORE_INDEX
    count = keep.sum()
    if not completion_logits or not plain_lm_head(model):
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1][keep]
    else:
        base = model.get_base_model()
        hidden = base.get_decoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        logits = head_outside_autocast(base.get_output_embeddings(), hidden[:, :-1][keep])
    loss = F.cross_entropy(logits.float(), targets[keep], reduction="sum")
    if weight:
        loss = loss + weight * distance(logits, targets[keep])
    return loss, count


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
