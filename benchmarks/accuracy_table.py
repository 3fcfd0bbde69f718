"""The accuracy table: a fine-tuned run's LLM alone and its blend against the same
model before fine-tuning and the classical baselines, all on the same test items, each row
paired item by item against TF-IDF, from the runs' predictions.csv files.

    python -m pricer fit  --config configs/sample.yaml --model.base_model $GGUF --data.source $SAMPLE --run_name tuned
    python -m pricer test --config configs/sample.yaml --model.base_model $GGUF --data.source $SAMPLE --run_name untrained
    python benchmarks/accuracy_table.py runs/sample/tuned runs/sample/untrained

The blend row is the run's read-out when validation chose the blend; when it chose the LLM
alone, the row is the blend at validation's best weight below 1, marked as not chosen. The
TF-IDF column is the row's MAE minus TF-IDF's, with its paired bootstrap 95% interval: below
zero throughout means better than TF-IDF beyond the noise.

Neighbours in the prompt: `--without <run>` adds a run of the LLM trained without neighbours
(`--data.neighbors 0`) on the same test items, as a row of its own and as a second paired
column, and checks the targets: the LLM with neighbours at least 25% below TF-IDF's MAE, and
below the LLM without them beyond the noise.

    python benchmarks/accuracy_table.py runs/sample/with-k5 runs/sample/untrained --without runs/sample/k0
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from pricer.read.baselines import BASELINE_NAMES
from pricer.read.blend import Blend, coverage, mix_text
from pricer.read.metrics import gap_text, mae_gap, price_metrics
from pricer.read.tfidf import partner_prices

TFIDF = "tfidf_linear_log_price"
KNN = "tfidf_knn_log_price"
BLEND_TARGET = 0.85  # the target: the blend at least 15% below TF-IDF's MAE
NEIGHBORS_TARGET = 0.75  # the target: the LLM with neighbours at least 25% below TF-IDF's MAE
WITHOUT = "fine-tuned LLM without neighbours"


def load(run: Path) -> tuple[dict, object]:
    import pandas as pd

    paths = [run / "metrics.json", run / "predictions.csv"]
    for path in paths:
        if not path.is_file():
            raise SystemExit(f"{path} does not exist: run `test` (or `fit`) for {run} first")
    return json.loads(paths[0].read_text()), pd.read_csv(paths[1])


def same_items(a, b, where: str) -> None:
    if len(a) != len(b) or not (a["title"].equals(b["title"]) and (a["price"] == b["price"]).all()):
        raise SystemExit(f"{where}: not the same test items in the same order as the fine-tuned run")


def model_rows(
    metrics: dict, frame, untrained=None, without=None
) -> list[tuple[str, np.ndarray, float | None]]:
    """(name, prices, interval coverage or None) for every row of the table."""
    if TFIDF not in frame or "llm_predicted" not in frame:
        raise SystemExit(
            "predictions.csv has no llm_predicted or TF-IDF column: test the run with this pricer"
        )
    truth = frame["price"].to_numpy()
    llm, llm_low, llm_high = (frame[k].to_numpy() for k in ("llm_predicted", "llm_low", "llm_high"))
    blend = metrics.get("blend", {})
    weight, scale = blend.get("weight", 1.0), blend.get("interval_scale", 1.0)
    rows = [("fine-tuned LLM alone", llm, coverage(truth, llm_low, llm_high))]
    if weight < 1:
        mix = mix_text(weight, blend.get("knn_share"))
        rows.append((f"blend, {mix} (chosen on validation)", frame["predicted"].to_numpy(),
                     coverage(truth, frame["low"], frame["high"])))  # fmt: skip
    else:
        best = blend.get("validation", {}).get("best_mix_weight")
        if best is not None:
            near = blend["validation"].get("best_mix_knn_share") or 0.0
            knn = frame[KNN].to_numpy() if KNN in frame else None
            partner = partner_prices(frame[TFIDF].to_numpy(), knn, near)
            point, low, high = Blend(best, scale, near).apply(llm, llm_low, llm_high, partner)
            rows.append((f"blend, {mix_text(best, near)} (not chosen: validation kept the LLM alone)", point,
                         coverage(truth, low, high)))  # fmt: skip
    if without is not None:
        same_items(frame, without, "the run without neighbours' predictions.csv")
        rows.append((WITHOUT, without["llm_predicted"].to_numpy(),
                     coverage(truth, without["llm_low"], without["llm_high"])))  # fmt: skip
    if untrained is not None:
        same_items(frame, untrained, "the untrained run's predictions.csv")
        rows.append(("same model before fine-tuning", untrained["predicted"].to_numpy(),
                     coverage(truth, untrained["low"], untrained["high"])))  # fmt: skip
    for name in metrics.get("baselines", {}):
        if name in frame:
            rows.append((BASELINE_NAMES.get(name, name), frame[name].to_numpy(), None))
    return rows


def table(metrics: dict, frame, untrained=None, without=None) -> str:
    truth = frame["price"].to_numpy()
    tfidf = frame[TFIDF].to_numpy()
    today = without["llm_predicted"].to_numpy() if without is not None else None
    measured = []
    for name, prices, held in model_rows(metrics, frame, untrained, without):
        m = price_metrics(truth, prices)
        if name != BASELINE_NAMES[TFIDF]:
            m.update(mae_gap(truth, prices, tfidf))
        if today is not None and name != WITHOUT:
            m["to_today"] = gap_text(mae_gap(truth, prices, today))
        measured.append((name, m, held))
    nominal = metrics.get("interval_coverage", {}).get("nominal", 0.8)
    today_column = (
        ("| this minus the LLM without neighbours (paired 95% CI) ", "---:|")
        if today is not None
        else ("", "")
    )
    lines = [
        f"Test split: {len(truth)} items; read-out {metrics.get('read', {}).get('point', '?')}.",
        "",
        f"| model | MAE | 95% CI of the MAE | RMSLE | hit rate | this minus TF-IDF (paired 95% CI) "
        f"{today_column[0]}| {nominal:.0%} interval held |",
        f"|---|---:|---:|---:|---:|---:|{today_column[1]}---:|",
    ]
    for name, m, held in sorted(measured, key=lambda row: row[1]["mae"]):
        low, high = m["mae_ci95"]
        shown = f"{held:.1%}" if held is not None else ""
        to_today = f" {m.get('to_today', '')} |" if today is not None else ""
        lines.append(
            f"| {name} | ${m['mae']:.2f} | ${low:.2f}-{high:.2f} | {m['rmsle']:.3f} | "
            f"{100 * m['hit_rate']:.1f}% | {gap_text(m)} |{to_today} {shown} |"
        )
    by_name = dict((name, m) for name, m, _ in measured)
    tfidf_mae = by_name[BASELINE_NAMES[TFIDF]]["mae"]
    alone = by_name["fine-tuned LLM alone"]
    blended = next((m for name, m in by_name.items() if name.startswith("blend")), None)
    lines.append("")
    scale = metrics.get("blend", {}).get("interval_scale", 1.0)
    if scale != 1.0:
        lines.append(
            f"- the interval's width in log price scaled by {scale:g} on validation: the read-out's held "
            f"{coverage(truth, frame['low'], frame['high']):.1%} (the LLM alone row's is before scaling)"
        )
    lines += [
        f"- LLM alone better than TF-IDF beyond the noise (paired interval below zero): "
        f"{'met' if alone['mae_gap_ci95'][1] < 0 else 'missed'}, {gap_text(alone)}",
    ]
    if today is not None:
        ratio = alone["mae"] / tfidf_mae
        gap = mae_gap(truth, frame["llm_predicted"].to_numpy(), today)
        lines += [
            f"- LLM with neighbours at least 25% below TF-IDF's MAE: "
            f"{'met' if ratio <= NEIGHBORS_TARGET else 'missed'}, {100 * (1 - ratio):.1f}% below",
            f"- LLM with neighbours below the LLM without them beyond the noise: "
            f"{'met' if gap['mae_gap_ci95'][1] < 0 else 'missed'}, {gap_text(gap)}",
        ]
    if blended is not None:
        ratio = blended["mae"] / tfidf_mae
        lines.append(
            f"- blend at least 15% below TF-IDF's MAE: {'met' if ratio <= BLEND_TARGET else 'missed'}, "
            f"{100 * (1 - ratio):.1f}% below"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tuned", type=Path, help="the fine-tuned run folder")
    parser.add_argument("untrained", type=Path, nargs="?", help="a `test` run of the base model, untrained")
    parser.add_argument(
        "--without", type=Path, help="a fine-tuned run without neighbours (--data.neighbors 0)"
    )
    args = parser.parse_args(argv)
    metrics, frame = load(args.tuned)
    untrained = load(args.untrained)[1] if args.untrained else None
    without = load(args.without)[1] if args.without else None
    text = table(metrics, frame, untrained, without)
    print(text)
    return text


if __name__ == "__main__":
    main()
