"""The machine's matmul peak, fp32 and bf16, measured: the denominator of model FLOPs utilisation.

Square matmuls on the threads torch uses (all cores by default); prints GFLOP/s, the best of
several timed runs after a warm-up (a peak, not a typical value).

    python benchmarks/matmul_peak.py
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def matmul_gflops(dtype: torch.dtype, size: int = 2048, repeats: int = 5, seconds: float = 1.0) -> float:
    """Best GFLOP/s of `size` x `size` matmuls in `dtype` over `repeats` runs of about `seconds`."""
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    torch.matmul(a, b)  # warm-up: kernels chosen, pages touched
    best = 0.0
    for _ in range(repeats):
        count, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds:
            torch.matmul(a, b)
            count += 1
        best = max(best, 2 * size**3 * count / elapsed / 1e9)
    return best


def peaks(size: int = 2048, repeats: int = 5) -> dict[str, float]:
    return {
        "threads": torch.get_num_threads(),
        "fp32_gflops": matmul_gflops(torch.float32, size, repeats),
        "bf16_gflops": matmul_gflops(torch.bfloat16, size, repeats),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", help="write the result here")
    args = parser.parse_args()
    result = peaks(args.size, args.repeats)
    print(f"| dtype | GFLOP/s ({result['threads']} threads, {args.size}^2 matmul, best of {args.repeats}) |")
    print("|---|---:|")
    print(f"| fp32 | {result['fp32_gflops']:.1f} |")
    print(f"| bf16 | {result['bf16_gflops']:.1f} |")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(result, out, indent=2)


if __name__ == "__main__":
    main()
