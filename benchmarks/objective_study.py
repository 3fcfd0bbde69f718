"""The objective study: which training objective `configs/sample.yaml` should default to, chosen
on validation with two seeds on a fresh split, its test split untouched until the end.

    python benchmarks/objective_study.py plan                # the runs, as commands
    python benchmarks/objective_study.py decide runs/study   # the decision, from their validation.csv

The rule, fixed before any run it decides:

1. Every run is `configs/sample.yaml` (five neighbours in the prompt, the base and optimizer as
   committed) for one epoch on the sample, with the split seed `SPLIT_SEED` (not the 42 every
   earlier run used, so no choice here has seen its validation or test items) and `--skip_test
   true`: no selection run reads the test split. Runs differ only in `--seed_everything` and the
   arm's options.
2. An arm is compared with the baseline (today's recipe, cross-entropy alone) on the LLM's own
   validation prices (each run's `validation.csv`, the weights fit kept), item by item: the
   gaps of both seeds pooled (each item once a seed), their mean and a paired bootstrap 95%
   interval (`pricer.read.metrics.mae_gap`).
3. Each family's candidate is chosen first on seed 1 alone (the lowest validation MAE): the
   distance weight among `WEIGHTS`, the neighbours' form between `summary` (their prices as
   numbers instead of their lines) and `both` (the numbers beside the lines). Only the
   candidate runs on seed 2.
4. A candidate is adopted only if its pooled gap's whole interval is below zero and it is below
   the baseline on each seed by itself. Otherwise it stays an option, off by default, reported
   with its gap and its cost a step. Both families adopted: their combination is one more pair
   of runs, adopted by the same rule against the better of the two.
5. A price head on the last hidden state, fitted after the LoRA on frozen features
   (`benchmarks/hidden_head.py`), needs no run of its own: it is measured on each seed's
   baseline adapter, and adopted by the same rule, its gap the cross-fitted mix against the LLM
   alone (the weight chosen on one half of validation, scored on the other). Adopted, it is
   built into fit and every read before the test split is read.
6. After the choice, the test split is read once, by `pricer test`, for the adopted recipe (or
   the baseline, if none is) and the baseline, each seed, and by the course's recipe
   (`benchmarks/course_recipe.py`, one run a seed on the same split without neighbours, the
   course's prompt): the ledger records every read.

Budget: about 2.6 hours a run on this 2-core CPU (11.6 s a step, 704 steps, two validations);
nine runs and two course runs, about 27 hours, run in working periods that resume from
`last.ckpt`.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.figures import report  # noqa: E402
from pricer.read.metrics import mae_gap  # noqa: E402

SPLIT_SEED = 2026
SEEDS = (1, 2)
# Number Token Loss's weight of 0.3 on a digit distance of 0-9 is 2.7 on pricer's 0-1 scale:
# one weight below it and one above.
WEIGHTS = (1.0, 4.0)
COMMON = (
    "python -m pricer fit --config configs/sample.yaml --model.base_model $GGUF --data.source $SAMPLE "
    f"--data.seed {SPLIT_SEED} --trainer.max_epochs 1 --skip_test true --trainer.default_root_dir runs/study"
)


FAMILIES = {
    "distance": {f"distance-{w:g}": f"--model.price_distance {w:g}" for w in WEIGHTS},
    "neighbor_format": {f"format-{f}": f"--data.neighbor_format {f}" for f in ("summary", "both")},
}


def arms() -> dict[str, str]:
    """Each arm's name and its options beside the common ones."""
    return {
        "baseline": "",
        **{name: options for family in FAMILIES.values() for name, options in family.items()},
    }


def plan() -> list[str]:
    lines = [
        f"{COMMON} --seed_everything 1 --run_name {name}-s1 {options}".strip()
        for name, options in arms().items()
    ]
    lines.append(f"{COMMON} --seed_everything 2 --run_name baseline-s2")
    for family in FAMILIES:
        lines.append(f"{COMMON} --seed_everything 2 --run_name <the chosen {family} arm>-s2 <its options>")
    return lines


def validation(run: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    with (run / "validation.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    truth = np.array([float(r["price"]) for r in rows])
    return truth, np.array([float(r["predicted"]) for r in rows]), [r["title"] for r in rows]


def mae(truth: np.ndarray, predicted: np.ndarray) -> float:
    return float(np.abs(predicted - truth).mean())


def decide(root: Path) -> dict:
    """The decision by the rule above, from the runs found under `root` (`<arm>-s<seed>`)."""
    found = {
        run.name: validation(run)
        for run in sorted(root.glob("*-s[0-9]"))
        if (run / "validation.csv").exists()
    }
    first = {name: mae(*found[f"{name}-s1"][:2]) for name in arms() if f"{name}-s1" in found}
    if "baseline" not in first:
        raise SystemExit(f"no baseline-s1/validation.csv under {root}")
    chosen = {}
    for family, members in FAMILIES.items():
        candidates = {name: first[name] for name in members if name in first}
        if candidates:
            chosen[family] = min(candidates, key=candidates.get)
    result = {"split_seed": SPLIT_SEED, "seed_1_mae": first, "chosen": chosen, "arms": {}}
    for name in chosen.values():
        pairs = {}
        for seed in (s for s in SEEDS if f"{name}-s{s}" in found and f"baseline-s{s}" in found):
            t, a, titles = found[f"{name}-s{seed}"]
            t_base, b, titles_base = found[f"baseline-s{seed}"]
            if titles != titles_base or not np.array_equal(t, t_base):
                raise SystemExit(
                    f"{name}-s{seed} and baseline-s{seed} did not read the same validation items"
                )
            pairs[seed] = (t, a, b)
        result["arms"][name] = rule(pairs)
    result["head"] = head_decision(root)
    return result


def head_decision(root: Path) -> dict | None:
    """Rule 5: the head's cross-fitted mix against the LLM alone on each seed's baseline adapter
    (`benchmarks/hidden_head.py` wrote `hidden_head.csv` there), pooled as the arms are."""
    from benchmarks.hidden_head import ITEMS

    seeds = [s for s in SEEDS if (root / f"baseline-s{s}" / ITEMS).is_file()]
    if not seeds:
        return None
    pairs = {}
    for seed in seeds:
        with (root / f"baseline-s{seed}" / ITEMS).open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        pairs[seed] = tuple(np.array([float(r[k]) for r in rows]) for k in ("price", "mix", "llm"))
    return rule(pairs)


def rule(pairs: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> dict:
    """Rules 2 and 4 on (truth, candidate, baseline) prices a seed: each seed's gap, the pooled
    gap with its paired interval, and whether the candidate is adopted."""
    each = {
        seed: {"mae": mae(t, a), "baseline_mae": mae(t, b), "gap": mae(t, a) - mae(t, b)}
        for seed, (t, a, b) in pairs.items()
    }
    joined = [np.concatenate([p[i] for p in pairs.values()]) for i in range(3)] if pairs else None
    pooled = mae_gap(*joined) if joined else None
    adopted = (
        len(pairs) == len(SEEDS)
        and pooled["mae_gap_ci95"][1] < 0
        and all(s["gap"] < 0 for s in each.values())
    )
    return {"seeds": each, "pooled": pooled, "adopted": adopted}


def main(argv: list[str] | None = None) -> dict | list[str]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("plan", help="print the runs")
    decision = commands.add_parser("decide", help="the decision, from the runs' validation.csv")
    decision.add_argument("root", type=Path)
    decision.add_argument("--out", type=Path, help="write the decision as JSON here")
    args = parser.parse_args(argv)
    if args.command == "plan":
        lines = plan()
        print("\n".join(lines))
        return lines
    result = decide(args.root)
    return report(result, args.out)


if __name__ == "__main__":
    main()
