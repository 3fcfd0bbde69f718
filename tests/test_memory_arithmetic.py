"""The T4 memory arithmetic against what a real (tiny) 4-bit LoRA Llama saves for backward.

The model is loaded and prepared by pricer's own code (NF4 weights, peft's k-bit preparation,
LoRA on the attention projections) and run under 16-bit autocast with a padded batch; torch's
saved-tensor hooks count every tensor autograd keeps, attributed to the decoder layer that saved
it. The arithmetic in benchmarks/t4_memory.py is a function of the shape, so the figure it gives
at Llama-3.1-8B's shape is the one pinned here at two small shapes of the same proportions.
"""

from __future__ import annotations

import collections
import json

import pytest
import torch

from benchmarks.t4_check import LLAMA_8B, TARGETS
from benchmarks.t4_memory import FP32, layer_saved_per_token, per_token

BATCH, SHORT, LONG = 2, 24, 40
SHAPES = [  # Llama-3.1-8B's proportions: 4 query heads a key-value head, an MLP 3.5 times as wide
    {"hidden_size": 128, "intermediate_size": 448, "num_attention_heads": 8, "num_key_value_heads": 2},
    {"hidden_size": 64, "intermediate_size": 224, "num_attention_heads": 4, "num_key_value_heads": 1},
]
LORA_R = 8


def tiny(tmp_path, shape: dict) -> tuple[str, dict]:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(num_hidden_layers=2, vocab_size=256, max_position_embeddings=128, **shape)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(tmp_path)
    return str(tmp_path), config.to_dict()


def saved_bytes(folder: str, seq_len: int, dtype: str, checkpointing: bool) -> tuple[dict, list]:
    """Bytes autograd saves in a forward of a padded batch, by decoder layer ("outside" for the
    rest), and each layer's input as (dtype, bytes)."""
    from pricer.base.load import load_model
    from pricer.base.quantization import add_lora

    model = load_model(folder, "4bit", "nf4", True, dtype, "cpu", gradient_checkpointing=checkpointing)
    model = add_lora(model, LORA_R, 2 * LORA_R, 0.0, TARGETS, folder)
    model.train()
    decoder = model.get_base_model().get_decoder()
    where, inputs = ["outside"], []

    def enter(module, args, kwargs, index):
        where[0] = index
        hidden = args[0] if args else kwargs["hidden_states"]
        inputs.append((hidden.dtype, hidden.untyped_storage().nbytes()))

    for index, layer in enumerate(decoder.layers):
        layer.register_forward_pre_hook(lambda m, a, k, i=index: enter(m, a, k, i), with_kwargs=True)
        layer.register_forward_hook(lambda *_: where.__setitem__(0, "outside"))
    seen, by_place = set(), collections.Counter()

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            by_place[where[0]] += storage.nbytes()
        return tensor

    ids = torch.randint(0, 256, (BATCH, seq_len), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding, as the data module pads: the attention path of real batches
    with (
        torch.autocast("cpu", dtype=getattr(torch, dtype)),
        torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t),
    ):
        decoder(input_ids=ids, attention_mask=mask)
    return dict(by_place), inputs


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("shape", SHAPES, ids=["h128", "h64"])
def test_a_recomputed_layer_saves_what_the_arithmetic_counts(tmp_path, shape, dtype) -> None:
    """The second layer's saved bytes (the first also holds what the layers share), between a
    short and a long batch, so the weights' 16-bit casts (the same at any length) cancel."""
    folder, config = tiny(tmp_path, shape)
    short, _ = saved_bytes(folder, SHORT, dtype, checkpointing=False)
    long, _ = saved_bytes(folder, LONG, dtype, checkpointing=False)
    counted = BATCH * (
        LONG * layer_saved_per_token(config, LONG, LORA_R, TARGETS)
        - SHORT * layer_saved_per_token(config, SHORT, LORA_R, TARGETS)
    )
    assert long[1] - short[1] == counted


def test_checkpointing_keeps_each_layer_input_in_fp32_and_nothing_else_of_it(tmp_path) -> None:
    folder, config = tiny(tmp_path, SHAPES[0])
    short, short_inputs = saved_bytes(folder, SHORT, "float16", checkpointing=True)
    long, long_inputs = saved_bytes(folder, LONG, "float16", checkpointing=True)
    hidden, layers = config["hidden_size"], config["num_hidden_layers"]
    kept = BATCH * LONG * hidden * FP32
    assert long_inputs == [(torch.float32, kept)] * layers  # the residual stream is fp32
    # a checkpointed layer keeps its input alone; the rest is recomputed in backward
    assert [long[index] for index in range(layers)] == [kept] * layers
    parts = per_token(config, LONG, LORA_R, TARGETS)
    assert parts["checkpointed_inputs"] == config["num_hidden_layers"] * hidden * FP32
    assert long["outside"] - short["outside"] == BATCH * (LONG - SHORT) * parts["final_norm"]


def test_the_8b_sample_is_counted_with_its_fp32_residual_stream_and_mlp() -> None:
    """At Llama-3.1-8B's shape the residual stream kept for 32 layers and the MLP's fp32
    intermediates are most of a sample: what the earlier all-16-bit count missed."""
    config = json.loads(LLAMA_8B.read_text())
    parts = per_token(config, 340, 32, TARGETS)
    hidden, inter = config["hidden_size"], config["intermediate_size"]
    assert parts["checkpointed_inputs"] == 32 * hidden * 4
    assert parts["recomputed_layer"] >= 3 * inter * 4 + 2 * hidden * 4
    all_16_bit = 32 * hidden * 4 + (12 * hidden + 4 * inter) * 2
    assert sum(parts.values()) > 1.4 * all_16_bit
