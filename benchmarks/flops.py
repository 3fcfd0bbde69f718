"""FLOPs of what a model computed, counted by torch's `FlopCounterMode`.

torch counts every matmul, convolution and fused attention it has a formula for. Two kinds of
op that these benchmarks run have none, so they are added here (a count without them would
miss most of the work):
- bitsandbytes' 4-bit matmuls (`gemm_4bit`, `gemv_4bit`): a 4-bit layer read on the CPU;
  2 x rows x out x in, as for a dense matmul of the same shape.
- the CPU's fused attention kernel (`_scaled_dot_product_flash_attention_for_cpu` and its
  backward): torch's own formulas for the GPU's fused kernels, which compute the same thing.

Attention is counted over the whole (masked) rectangle, as torch counts it everywhere.
"""

from __future__ import annotations

import math

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count


def _matmul_4bit(a_shape, b_shape, shape_b, *args, out_shape=None, **kwargs) -> int:
    out_features, in_features = shape_b
    return 2 * math.prod(a_shape[:-1]) * out_features * in_features


def _cpu_attention(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_attention_backward(
    grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs
) -> int:
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


def _formulas() -> dict:
    import bitsandbytes  # noqa: F401  (defines torch.ops.bitsandbytes)

    aten = torch.ops.aten
    return {
        torch.ops.bitsandbytes.gemm_4bit: _matmul_4bit,
        torch.ops.bitsandbytes.gemv_4bit: _matmul_4bit,
        aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention,
        aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_attention_backward,
    }


def flop_counter() -> FlopCounterMode:
    """A silent FlopCounterMode that also counts 4-bit matmuls and the CPU's fused attention;
    `get_total_flops()` after the `with` block."""
    return FlopCounterMode(display=False, custom_mapping=_formulas())
