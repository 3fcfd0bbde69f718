"""The blend's partners, measured on a run's validation reads: how much each classical model
adds to the LLM's price, item by item on the validation split.

For each validation.csv (written by `fit` or `validate`), the LLM alone, the TF-IDF ridge, the
nearest neighbours for several k, and what `fit`'s choice makes of them on those items: the
best blend with the ridge alone (the blend before the neighbours) and with the ridge and the
neighbours (k as pricer reads them). Every number is a validation MAE: this chooses, it does not
report a test result. The classical models are fitted on the curated train split, as `fit`
fits them.

    python benchmarks/blend_partners.py --splits <curated folder>/data runs/sample/val-*/validation.csv
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from pricer.read.blend import choose_blend, mix_text
from pricer.read.metrics import gap_text, mae_gap
from pricer.read.tfidf import KNN_K, TfidfPrice

K_TRIED = (3, 5, 8, 10)


def split_frame(folder: Path, split: str):
    import pandas as pd

    files = sorted(folder.glob(f"{split}-*.parquet"))
    if not files:
        raise SystemExit(f"{folder}: no {split}-*.parquet: pass the curated splits' data folder")
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def read_validation(path: Path, truth: np.ndarray) -> dict[str, np.ndarray]:
    import pandas as pd

    frame = pd.read_csv(path)
    if len(frame) != len(truth) or not np.allclose(frame["price"].to_numpy(), truth, rtol=1e-5):
        raise SystemExit(f"{path}: not the validation items of these splits, in their order")
    return {k: frame[k].to_numpy() for k in ("predicted", "low", "high")}


def measure(model: TfidfPrice, texts: list[str], truth: np.ndarray, reads: dict, nominal: float) -> dict:
    def mae(prices) -> float:
        return float(np.abs(np.asarray(prices) - truth).mean())

    ridge = model.predict(texts)
    near = {k: np.expm1(model.knn_log_price(texts, k)) for k in K_TRIED}
    llm = (reads["predicted"], reads["low"], reads["high"])
    ridge_only, before = choose_blend(truth, *llm, ridge, nominal, calibrate=False)
    both, after = choose_blend(truth, *llm, ridge, nominal, calibrate=False, knn=near[KNN_K])
    blended = {}
    for name, (blend, partner) in {
        "ridge": (ridge_only, ridge),
        "ridge_and_neighbors": (both, model.predict(texts, both.knn_share)),
    }.items():
        blended[name] = blend.apply(*llm, partner)[0]
    return {
        "n": int(len(truth)),
        "llm": mae(reads["predicted"]),
        "ridge": mae(ridge),
        "neighbors": {str(k): mae(v) for k, v in near.items()},
        "blend_ridge": {"weight": ridge_only.weight, "mae": before["blend_mae"]},
        "blend_ridge_and_neighbors": {
            "weight": both.weight,
            "knn_share": both.knn_share,
            "mae": after["blend_mae"],
        },
        # the new blend's MAE minus the old's, paired over the validation items
        "gain": mae_gap(truth, blended["ridge_and_neighbors"], blended["ridge"]),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", type=Path, required=True, help="the curated splits' data folder")
    parser.add_argument("validation", type=Path, nargs="+", help="validation.csv files of runs")
    parser.add_argument("--coverage", type=float, default=0.8)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    train, validation = split_frame(args.splits, "train"), split_frame(args.splits, "validation")
    model = TfidfPrice.fit(list(train["text"]), train["price"].to_numpy())
    texts, truth = list(validation["text"]), validation["price"].to_numpy(dtype=np.float64)
    results = {}
    print(f"validation MAE on {len(truth)} items; the classical models fitted on {len(train)} train items")
    for path in args.validation:
        r = measure(model, texts, truth, read_validation(path, truth), args.coverage)
        results[str(path)] = r
        near = ", ".join(f"k {k} ${v:.2f}" for k, v in r["neighbors"].items())
        old, new = r["blend_ridge"], r["blend_ridge_and_neighbors"]
        print(f"{path}: LLM ${r['llm']:.2f}, ridge ${r['ridge']:.2f}, neighbours {near}")
        print(f"  blend with the ridge: ${old['mae']:.2f} at {old['weight']:g} LLM")
        print(
            f"  with ridge and neighbours: ${new['mae']:.2f} at {mix_text(new['weight'], new['knn_share'])}"
        )
        print(f"  new minus old, paired 95% CI: {gap_text(r['gain'])}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
