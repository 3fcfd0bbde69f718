"""The accuracy table of issue 8: a fine-tuned run against the same model before fine-tuning and
the classical baselines, all on the same test split, from the runs' metrics.json files.

    python -m pricer fit  --config configs/sample.yaml --model.base_model $GGUF --data.source $SAMPLE --run_name tuned
    python -m pricer test --config configs/sample.yaml --model.base_model $GGUF --data.source $SAMPLE --run_name untrained
    python benchmarks/accuracy_table.py runs/sample/tuned runs/sample/untrained
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pricer.baselines import BASELINE_NAMES
from pricer.metrics import gap_text, mae_gap


def load(run: Path) -> dict:
    path = run / "metrics.json"
    if not path.is_file():
        raise SystemExit(f"{path} does not exist: run `test` (or `fit`) for {run} first")
    return json.loads(path.read_text())


def paired_gap(tuned: Path, untrained: Path) -> dict | None:
    """The fine-tuned MAE minus the untrained one, paired item by item through both runs'
    predictions.csv (None when either run has none). The rows must be the same items in the
    same order: anything else is a different split and an error."""
    import pandas as pd

    paths = [run / "predictions.csv" for run in (tuned, untrained)]
    if not all(path.is_file() for path in paths):
        return None
    a, b = (pd.read_csv(path) for path in paths)
    if len(a) != len(b) or not (a["title"].equals(b["title"]) and (a["price"] == b["price"]).all()):
        raise SystemExit(f"{paths[0]} and {paths[1]} are not the same test items in the same order")
    return mae_gap(a["price"].to_numpy(), a["predicted"].to_numpy(), b["predicted"].to_numpy())


def table(tuned: dict, untrained: dict | None, untrained_gap: dict | None = None) -> str:
    """One row per model, best MAE first; the gap column is the fine-tuned model's MAE minus the
    row's, with its paired 95% interval (below zero throughout: better beyond the noise)."""
    rows = [("fine-tuned (this run)", tuned)]
    if untrained is not None:
        if untrained["n"] != tuned["n"]:
            raise SystemExit(f"the runs tested different splits ({tuned['n']} and {untrained['n']} items)")
        rows.append(("same model before fine-tuning", {**untrained, **(untrained_gap or {})}))
    for name, metrics in tuned.get("baselines", {}).items():
        if isinstance(metrics, dict):
            rows.append((BASELINE_NAMES.get(name, name), metrics))
    lines = [
        f"Test split: {tuned['n']} items; read-out {tuned.get('read', {}).get('point', '?')}.",
        "",
        "| model | MAE | 95% CI of the MAE | RMSLE | hit rate | fine-tuned minus this (paired 95% CI) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, m in sorted(rows, key=lambda row: row[1]["mae"]):
        low, high = m["mae_ci95"]
        lines.append(
            f"| {name} | ${m['mae']:.2f} | ${low:.2f}-{high:.2f} | {m['rmsle']:.3f} | "
            f"{100 * m['hit_rate']:.1f}% | {gap_text(m)} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tuned", type=Path, help="the fine-tuned run folder")
    parser.add_argument("untrained", type=Path, nargs="?", help="a `test` run of the base model, untrained")
    args = parser.parse_args(argv)
    untrained = load(args.untrained) if args.untrained else None
    gap = paired_gap(args.tuned, args.untrained) if args.untrained else None
    text = table(load(args.tuned), untrained, gap)
    print(text)
    return text


if __name__ == "__main__":
    main()
