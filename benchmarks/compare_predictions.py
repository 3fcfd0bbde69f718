"""Two test reports' predictions of the same items, compared item by item.

Used to prove the dense CPU read prices as the 4-bit read does: the share of items whose
prices agree within $0.50 or 1%, the largest gap, and how far the MAE moves; and to compare two
runs on the same items (test's predictions.csv, or the validation.csv of fit and validate): the
first's MAE minus the second's with its paired bootstrap 95% interval.

    python benchmarks/compare_predictions.py <run>/predictions.csv <run>/evaluations/fourbit/predictions.csv
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from pricer.read.metrics import mae_gap, prices_agree


def read(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def compare(a_rows: list[dict], b_rows: list[dict]) -> dict:
    """Rows matched by position and checked to be the same items (title and true price)."""
    if len(a_rows) != len(b_rows):
        raise SystemExit(f"the reports hold {len(a_rows)} and {len(b_rows)} items: not the same test split")
    for i, (a, b) in enumerate(zip(a_rows, b_rows, strict=True)):
        if a["title"] != b["title"] or a["price"] != b["price"]:
            raise SystemExit(f"item {i + 1} differs: {a['title']!r} against {b['title']!r}")
    truth = np.array([float(r["price"]) for r in a_rows])
    a = np.array([float(r["predicted"]) for r in a_rows])
    b = np.array([float(r["predicted"]) for r in b_rows])
    gap = np.abs(a - b)
    close = prices_agree(a, b)
    mae_a, mae_b = float(np.abs(a - truth).mean()), float(np.abs(b - truth).mean())
    return {
        "items": len(a_rows),
        "within_50c_or_1pct": float(close.mean()),
        "identical": float((gap == 0).mean()),
        "max_abs_difference": float(gap.max()),
        "mae": [mae_a, mae_b],
        "mae_moves_by": abs(mae_a - mae_b),
        **mae_gap(truth, a, b),  # the first's MAE minus the second's, paired over the items
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    result = compare(read(args.first), read(args.second))
    print(
        f"{result['items']} items: {100 * result['within_50c_or_1pct']:.1f}% within $0.50 or 1% "
        f"({100 * result['identical']:.1f}% identical), largest gap ${result['max_abs_difference']:.2f}; "
        f"MAE ${result['mae'][0]:.2f} against ${result['mae'][1]:.2f} (moves by ${result['mae_moves_by']:.3f}; "
        f"the first minus the second, paired 95% CI: ${result['mae_gap_ci95'][0]:+.2f} to "
        f"${result['mae_gap_ci95'][1]:+.2f})"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
