"""The Space's prices against test's, item by item, on a trained run.

Each test item's prompt (the curated test split's `prompt` column) is quoted alone through
`Pricer.from_adapter`, the model the Space builds, with the run's blend and partner, and
compared with the price `test` wrote for it in the run's predictions.csv. The two read the
same weights under the same precision; `test` reads 16 left-padded prompts at once and the
Space one, so 16-bit rounding may move a price a little. A price is "close" when within $0.50
or 1% of the larger of the two (`pricer.read.metrics.prices_agree`, as every comparison counts it).

    python -m benchmarks.space_vs_test runs/sample/epochs2-lr6e-4 --splits <curated folder>/data \
        --base-model <SmolLM2-135M-Instruct.Q4_1.gguf> --items 600
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from benchmarks.blend_partners import split_frame
from benchmarks.training_speed import machine
from pricer.read.metrics import prices_agree

PRICES = ("predicted", "low", "high", "llm_predicted")  # test's columns, in the quotes' order


def close(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    return prices_agree(got, want)


def compare(run: Path, splits: Path, base_model: str | None, items: int | None) -> dict:
    import pandas as pd

    from pricer.read.report import spreadsheet_safe
    from pricer.read.serving import Pricer

    if items is not None and items < 1:
        raise SystemExit(f"--items must be at least 1, got {items}")
    wrote = pd.read_csv(run / "predictions.csv")
    missing = [c for c in ("title", *PRICES) if c not in wrote.columns]
    if missing:
        raise SystemExit(
            f"{run / 'predictions.csv'}: no {', '.join(missing)} column: not a test report of pricer's"
        )
    test = split_frame(splits, "test")
    n = min(len(wrote), items or len(wrote))
    titles = [spreadsheet_safe(t) for t in test["title"][:n]]  # as the report writes them
    if len(test) < n or titles != list(wrote["title"][:n]):
        raise SystemExit(f"{run / 'predictions.csv'}: not the test items of {splits}, in that order")
    pricer = Pricer.from_adapter(str(run / "adapter"), base_model=base_model, device="cpu")
    start = time.perf_counter()
    quotes = [pricer.quote_prompt(prompt) for prompt in test["prompt"][:n]]
    seconds = time.perf_counter() - start
    got = np.array([[q.price, q.low, q.high, q.llm_price] for q in quotes])
    want = wrote[list(PRICES)].to_numpy(dtype=np.float64)[:n]
    gap = np.abs(got[:, 0] - want[:, 0])
    return {
        "run": str(run),
        "machine": machine(),
        "n": n,
        "blend": pricer.blend.as_dict(),
        "close": float(close(got[:, 0], want[:, 0]).mean()),
        "to_the_cent": float((np.round(got[:, 0], 2) == np.round(want[:, 0], 2)).mean()),
        "largest_gap": float(gap.max()),
        "interval_close": float((close(got[:, 1], want[:, 1]) & close(got[:, 2], want[:, 2])).mean()),
        "llm_close": float(close(got[:, 3], want[:, 3]).mean()),
        "llm_to_the_cent": float((np.round(got[:, 3], 2) == np.round(want[:, 3], 2)).mean()),
        "seconds_a_quote": seconds / n,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a run folder: adapter/ and predictions.csv")
    parser.add_argument("--splits", type=Path, required=True, help="the curated splits' data folder")
    parser.add_argument("--base-model", help="a local copy of the recipe's base (a GGUF file, say)")
    parser.add_argument("--items", type=int, help="the first N test items (default: all)")
    parser.add_argument("--json", type=Path, help="write the result here too")
    args = parser.parse_args(argv)
    result = compare(args.run, args.splits, args.base_model, args.items)
    print(
        f"{result['n']} test items quoted alone, {result['seconds_a_quote']:.2f} s each "
        f"({result['machine']}): {result['close']:.1%} within $0.50 or 1% of test's price, "
        f"{result['to_the_cent']:.1%} to the cent, largest gap ${result['largest_gap']:.2f}; "
        f"interval {result['interval_close']:.1%}, the LLM alone {result['llm_close']:.1%} within the same "
        f"and {result['llm_to_the_cent']:.1%} to the cent"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
