"""The 8B job's training memory on a T4, by arithmetic, counted as the libraries allocate it.

    python benchmarks/t4_check.py --arithmetic     # the table, at the appliances job's shape

What a pass holds, for a base prepared by peft's `prepare_model_for_kbit_training` (embeddings,
norms and LM head in fp32), LoRA on the attention projections, non-reentrant gradient
checkpointing and fp16 (or bf16) autocast:

- fixed: the NF4 weights and their scales; the fp32 embeddings and LM head; the LoRA weights and
  their gradients in fp32; the largest weight dequantized for a matmul and its backward. Paged
  AdamW's two fp32 moments live in CUDA managed memory, outside torch's allocator and its cap
  (FitBatchSize's budget already leaves room for them): shown, not added.
- a sample, a token at a time:
  - every decoder layer's input, kept by checkpointing: the residual stream, fp32 (the
    embeddings are fp32, and each 4-bit matmul returns its input's dtype);
  - the one layer recomputed in backward, what it saves (`layer_saved_per_token`);
  - LoRA dropout's masks in that layer (one byte an element on a GPU);
  - backward's working gradients in that layer: the MLP's three fp32 intermediates and the
    residual stream's gradient, twice;
  - outside the layers: the final norm's fp32 input and its statistic;
  - the logits at the price positions (completion-only) or at every position (full logits).

`layer_saved_per_token` is pinned by tests/test_memory_arithmetic.py against the tensors a tiny
4-bit LoRA Llama's layer saves for backward (torch's saved-tensor hooks), at two shapes; the
backward's working gradients and the dropout masks are arithmetic alone.
"""

from __future__ import annotations

GIB = 2**30
SIZES = [1, 2, 4, 8, 16]
FP32 = 4


def shape(config: dict) -> dict:
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    return {
        "hidden": hidden,
        "inter": config["intermediate_size"],
        "layers": config["num_hidden_layers"],
        "vocab": config["vocab_size"],
        "heads": heads,
        "kv": hidden // heads * config["num_key_value_heads"],
    }


def target_inputs(config: dict, targets: list[str]) -> list[int]:
    """The width of each LoRA target's input."""
    s = shape(config)
    width = {"down_proj": s["inter"]}
    return [width.get(name, s["hidden"]) for name in targets]


def layer_saved_per_token(
    config: dict, seq_len: int, lora_r: int, targets: list[str], compute: int = 2
) -> int:
    """Bytes one decoder layer saves for backward, a token of one sample, under 16-bit autocast
    (`compute` bytes) with a padded batch's attention mask:
    - the MLP: gate's and up's outputs and SiLU(gate), fp32 (the 4-bit matmuls return fp32);
    - the two RMSNorms: each its fp32 input and one fp32 statistic;
    - each LoRA target: its input cast to 16 bits for A, and A's output for B;
    - attention: the query and the key and value repeated to every head (a mask present, so
      no grouped-query kernel), the output, all 16-bit, a log-sum-exp per head in fp32, and the
      mask's row for this token in 16 bits.
    """
    s = shape(config)
    mlp = 3 * s["inter"] * FP32
    norms = 2 * (s["hidden"] + 1) * FP32
    lora = sum((width + lora_r) * compute for width in target_inputs(config, targets))
    attention = 4 * s["hidden"] * compute + s["heads"] * FP32 + seq_len * compute
    return mlp + norms + lora + attention


def per_token(config: dict, seq_len: int, lora_r: int, targets: list[str], compute: int = 2) -> dict:
    """A sample's training memory a token, by part (bytes), logits aside."""
    s = shape(config)
    return {
        "checkpointed_inputs": s["layers"] * s["hidden"] * FP32,
        "recomputed_layer": layer_saved_per_token(config, seq_len, lora_r, targets, compute),
        "dropout_masks": sum(target_inputs(config, targets)),
        "backward_gradients": 3 * s["inter"] * FP32 + 2 * s["hidden"] * FP32,
        "final_norm": (s["hidden"] + 1) * FP32,
    }


def fixed_bytes(config: dict, lora_r: int, targets: list[str]) -> dict:
    s = shape(config)
    hidden, kv, inter = s["hidden"], s["kv"], s["inter"]
    linear = s["layers"] * (2 * hidden * hidden + 2 * hidden * kv + 3 * hidden * inter)
    outputs = {"q_proj": hidden, "k_proj": kv, "v_proj": kv, "o_proj": hidden, "gate_proj": inter}
    outputs |= {"up_proj": inter, "down_proj": hidden}
    lora = (
        s["layers"]
        * lora_r
        * sum(w + outputs[t] for w, t in zip(target_inputs(config, targets), targets, strict=True))
    )
    return {
        "lora_parameters": lora,
        # NF4: half a byte a weight; absmax per 64 weights in 8 bits, plus fp32 per 256 of those
        "nf4_weights": linear * (0.5 + 1 / 64 + 4 / (64 * 256)),
        "fp32_embeddings_and_head": (1 if config.get("tie_word_embeddings") else 2)
        * s["vocab"]
        * hidden
        * FP32,
        "lora_weights_and_gradients": lora * 2 * FP32,
        "dequantized_weight": 2 * hidden * inter * 2,  # the largest, for a matmul and its backward
    }


def arithmetic_estimate(
    config: dict,
    seq_len: int,
    completion: int,
    lora_r: int,
    budget_gib: float,
    targets: list[str] | None = None,
) -> dict:
    """The 8B job's memory by arithmetic (not measured): what is fixed, what each sample of a
    pass adds with and without completion-only logits, and the pass size each predicts."""
    targets = targets or ["q_proj", "k_proj", "v_proj", "o_proj"]
    s = shape(config)
    parts = fixed_bytes(config, lora_r, targets)
    fixed = sum(v for k, v in parts.items() if k != "lora_parameters")
    # Under 16-mixed the LM head's linear would cast its fp32 weight to fp16 at every call
    # (Lightning's autocast caches no cast). pricer runs its head outside autocast, on the price
    # rows in training and in every read (validation, test): no copy; a full-logits pass, the
    # model's own forward, keeps the copy for backward.
    head_copy = s["vocab"] * s["hidden"] * 2
    tokens = per_token(config, seq_len, lora_r, targets)
    per_sample = seq_len * sum(tokens.values())
    # logits in fp16, their fp32 copy for the loss, and both gradients: 12 bytes a logit; the
    # completion-only head is fp32 outside autocast: its logits, their gradient, the loss's copy
    logits_full = seq_len * s["vocab"] * 12
    logits_completion = completion * s["vocab"] * 12

    def largest(extra: int, copy: int) -> int:
        room = budget_gib * GIB - fixed - copy
        return max([size for size in SIZES if size * (per_sample + extra) <= room] or [0])

    return {
        "lora_parameters": parts["lora_parameters"],
        "fixed_parts_gib": {k: v / GIB for k, v in parts.items() if k != "lora_parameters"},
        "paged_adamw_state_gib": parts["lora_parameters"] * 2 * FP32 / GIB,
        "per_token_bytes": tokens,
        "fixed_gib": fixed / GIB,
        "head_copy_gib": head_copy / GIB,
        "fixed_gib_full_logits": (fixed + head_copy) / GIB,
        "read_fixed_gib": fixed / GIB,
        "per_sample_gib_completion_logits": (per_sample + logits_completion) / GIB,
        "per_sample_gib_full_logits": (per_sample + logits_full) / GIB,
        "pass_size_completion_logits": largest(logits_completion, 0),
        "pass_size_full_logits": largest(logits_full, head_copy),
        "at_16_gib_completion_logits": (fixed + 16 * (per_sample + logits_completion)) / GIB,
        "at_16_gib_full_logits": (fixed + head_copy + 16 * (per_sample + logits_full)) / GIB,
    }


PART_NAMES = {
    "nf4_weights": "NF4 weights and scales",
    "fp32_embeddings_and_head": "embeddings and LM head, fp32",
    "lora_weights_and_gradients": "LoRA weights and gradients, fp32",
    "dequantized_weight": "largest weight dequantized (matmul and backward)",
    "checkpointed_inputs": "each layer's input, fp32 (checkpointing)",
    "recomputed_layer": "the recomputed layer's saved tensors",
    "dropout_masks": "LoRA dropout masks",
    "backward_gradients": "backward's working gradients",
    "final_norm": "final norm's input",
}


def arithmetic_table(arithmetic: dict, budget: float, seq_len: int) -> list[str]:
    def gib(value: float) -> str:
        return f"{value:.2f} GiB"

    parts = [
        f"| fixed: {PART_NAMES[name]} | {gib(value)} | {gib(value)} |"
        for name, value in arithmetic["fixed_parts_gib"].items()
    ]
    tokens = [
        f"| a sample: {PART_NAMES[name]} | {gib(value * seq_len / GIB)} | {gib(value * seq_len / GIB)} |"
        for name, value in arithmetic["per_token_bytes"].items()
    ]
    return [
        f"| arithmetic (not measured), {seq_len}-token sequences | completion-only logits | full logits |",
        "|---|---:|---:|",
        *parts,
        f"| fixed memory | {gib(arithmetic['fixed_gib'])} | {gib(arithmetic['fixed_gib_full_logits'])} |",
        f"| of which the LM head's fp16 copy | none (head run outside autocast) | "
        f"{gib(arithmetic['head_copy_gib'])} |",
        f"| paged AdamW state (managed memory, outside the cap) | {gib(arithmetic['paged_adamw_state_gib'])} | "
        f"{gib(arithmetic['paged_adamw_state_gib'])} |",
        *tokens,
        f"| memory per sample of a pass, logits included | {gib(arithmetic['per_sample_gib_completion_logits'])} | "
        f"{gib(arithmetic['per_sample_gib_full_logits'])} |",
        f"| at 16 a pass | {gib(arithmetic['at_16_gib_completion_logits'])} | "
        f"{gib(arithmetic['at_16_gib_full_logits'])} |",
        f"| largest pass size within {budget} GiB | {arithmetic['pass_size_completion_logits']} | "
        f"{arithmetic['pass_size_full_logits']} |",
        f"| a read (validation, test): fixed memory, the head outside autocast | "
        f"{gib(arithmetic['read_fixed_gib'])} | {gib(arithmetic['read_fixed_gib'])} |",
    ]
