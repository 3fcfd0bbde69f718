"""The objective study: which training objective `configs/sample.yaml` should default to, chosen
on validation with two seeds on a fresh split, its test split untouched until the end.

    python benchmarks/objective_study.py plan                     # the runs, as commands
    python benchmarks/objective_study.py keep runs/study/<run>    # its validation prices, kept
    python benchmarks/objective_study.py decide runs/study        # the decision

The rule, fixed before any run it decides:

1. Every run is `configs/sample.yaml` (the base and optimizer as committed) on the sample with
   the split seed `SPLIT_SEED` (not the 42 every earlier run used, so no choice here has seen its
   validation or test items), no neighbours in the prompt, and `--skip_test true`: no selection
   run reads the test split. A run is `STEPS` steps, half an epoch, and validates once, at its
   end, so that it fits a working period on this 2-core CPU (the run folder does not outlive
   one). Runs differ only in `--seed_everything` and the arm's options, and in precision where
   the machine does: the config's bf16-mixed where the CPU computes bf16 natively, 32-true where
   it emulates it (as the config says; pricer warns). Each comparison is within one seed, so a
   seed's runs share one precision: seed 1's were bf16-mixed (an AMD EPYC with bf16),
   baseline-s2 32-true (an Intel Xeon with AVX-512 and no bf16, where a bf16 step took 19 s).
2. Each run's validation prices are kept in `benchmarks/objective_study/<run>.json` (the LLM's
   predicted prices, in the split's order, with a hash of the items' titles; no item data), so
   runs of different working periods are compared; the prices themselves come from any run's
   `validation.csv` of the same items.
3. An arm is compared with the baseline (today's recipe, cross-entropy alone) on the LLM's own
   validation prices, item by item: the gaps of both seeds pooled (each item once a seed), their
   mean and a paired bootstrap 95% interval (`pricer.read.metrics.mae_gap`).
4. The distance-aware loss runs at one weight, `WEIGHT`, fixed beforehand: Number Token Loss's
   0.3 on a digit distance of 0-9 (arXiv 2411.02083) is 2.7 on pricer's 0-1 scale.
5. A candidate is adopted only if its pooled gap's whole interval is below zero and it is below
   the baseline on each seed by itself. Otherwise it stays an option, off by default, reported
   with its gap and its cost a step.
6. A price head on the last hidden states, fitted after the LoRA on frozen features
   (`benchmarks/hidden_head.py`), needs no run of its own: it is measured on each seed's
   baseline adapter, its gap the cross-fitted mix against the LLM alone (the weight chosen on
   one half of validation, scored on the other). Its features are chosen on seed 1 alone, the
   lower cross-fitted MAE of two: the final norm's output at the prompt's last token (`last`),
   or with the two layers' outputs before it (`last3`); the chosen one is adopted by the rule
   above. Adopted, it is built into fit and every read before the test split is read.
7. The neighbours' form (their prices as numbers instead of, or beside, their lines) needs
   neighbours in the prompt, which doubles a step: it is a study of its own, against a baseline
   with neighbours, after this one.
8. After the choice, the test split is read once, by `pricer test`, for the adopted recipe (or
   the baseline, if none is) and the baseline, each seed, trained again from the same seed where
   the run folder is gone, and by the course's recipe (`benchmarks/course_recipe.py`, one run a
   seed on the same split, the course's prompt): the ledger records every read. An adopted head
   changes no training: one run a seed then serves both, its test report giving the LLM alone
   beside the head's mix on the same items (the TF-IDF blend off, as the head was chosen).
   `python benchmarks/objective_study.py final benchmarks/objective_study.json` prints them.

Budget: about 50 minutes a run on this 2-core CPU (about 6.7 s a step without neighbours, 352
steps, one validation of 600 items); four runs, fewer when a candidate is above the baseline
on seed 1 (seed 2 cannot change that), and about 25 minutes a head.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.figures import report  # noqa: E402
from pricer.read.metrics import gap_text, mae_gap  # noqa: E402

SPLIT_SEED = 2026
SEEDS = (1, 2)
STEPS = 352
WEIGHT = 2.7
KEPT = REPO / "benchmarks" / "objective_study"
COMMON = (
    "python -m pricer fit --config configs/sample.yaml --model.base_model $GGUF --data.source $SAMPLE "
    f"--data.seed {SPLIT_SEED} --data.neighbors 0 --trainer.max_steps {STEPS} "
    f"--trainer.val_check_interval {STEPS} --skip_test true --trainer.default_root_dir runs/study"
)


# the head's features (`benchmarks/hidden_head.LAYERS`) -> its cross-fitted mix's column
HEADS = {"last": "mix", "last3": "mix_last3"}
FAMILIES = {"distance": {f"distance-{WEIGHT:g}": f"--model.price_distance {WEIGHT:g}"}}


def arms() -> dict[str, str]:
    """Each arm's name and its options beside the common ones."""
    return {
        "baseline": "",
        **{name: options for family in FAMILIES.values() for name, options in family.items()},
    }


def plan() -> list[str]:
    return [
        f"{COMMON} --seed_everything {seed} --run_name {name}-s{seed} {options}".strip()
        for seed in SEEDS
        for name, options in arms().items()
    ]


def final(decision: dict) -> list[str]:
    """Rule 8's commands, from the decision: each seed's run of the adopted recipe and, where an
    adopted arm changes training, of the baseline, each read once by `pricer test`; then the
    course's recipe on the same split (its curated folder found as `hidden_head` finds it)."""
    from benchmarks.hidden_head import LAYERS

    adopted = [name for name, result in decision["arms"].items() if result["adopted"]]
    head = decision.get("head") or {}
    reading = ""
    if head.get("adopted"):
        reading = f"--model.blend.enabled false --model.blend.head_layers {LAYERS[head['chosen']]}"
    runs = {"chosen": " ".join([*(arms()[name] for name in adopted), reading]).strip()}
    if adopted:
        runs["baseline"] = ""
    data = f"--model.base_model $GGUF --data.source $SAMPLE --data.seed {SPLIT_SEED} --data.neighbors 0"
    lines = []
    for seed in SEEDS:
        for name, options in runs.items():
            run = f"{name}-s{seed}"
            fit = COMMON.replace("runs/study", "runs/final")
            lines.append(f"{fit} --seed_everything {seed} --run_name {run} {options}".strip())
            lines.append(
                f"python -m pricer test --config configs/sample.yaml {data} --model.adapter "
                f"runs/final/{run}/adapter --trainer.default_root_dir runs/final --run_name {run}-test"
            )
    # the same training items as a pricer run: its steps of 8 are the course's steps of 4, twice
    steps = STEPS * 2
    for seed in SEEDS:
        out = f"--splits <curated folder> --gguf $GGUF --out runs/final/course-s{seed}"
        lines.append(f"python benchmarks/course_recipe.py train {out} --seed {seed} --max-steps {steps}")
        lines.append(f"python benchmarks/course_recipe.py read {out} --split test")
    return lines


def read_csv(path: Path, columns: tuple[str, ...]) -> tuple[list[str], dict[str, np.ndarray]]:
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [r["title"] for r in rows], {k: np.array([float(r[k]) for r in rows]) for k in columns}


def items_hash(titles: list[str]) -> str:
    """Which validation items, in which order: a hash of their titles."""
    return hashlib.sha256("\n".join(titles).encode()).hexdigest()[:16]


def keep(run: Path, kept: Path = KEPT) -> Path:
    """Rule 2: a run's validation prices (and its head's, when measured) as a small JSON file that
    outlives the run folder. The LLM's prices only: the items' prices are not kept."""
    from benchmarks.hidden_head import ITEMS

    if not (run / "validation.csv").is_file():
        raise SystemExit(f"{run}: no validation.csv; keep a study run after its fit has ended")
    titles, values = read_csv(run / "validation.csv", ("predicted",))
    record = {"run": run.name, "items": items_hash(titles), "predicted": values["predicted"].tolist()}
    if (run / ITEMS).is_file():
        head_titles, head = read_csv(run / ITEMS, head_columns(run / ITEMS))
        record["head"] = {"items": items_hash(head_titles), **{k: v.tolist() for k, v in head.items()}}
    kept.mkdir(parents=True, exist_ok=True)
    path = kept / f"{run.name}.json"
    path.write_text(json.dumps(record, indent=1) + "\n")
    return path


def gather(root: Path, kept: Path = KEPT) -> dict[str, dict]:
    """Each run's validation prices by name, from its folder under `root` or, where the folder is
    gone, from its kept file; the items' own prices from any run folder that read them."""
    from benchmarks.hidden_head import ITEMS

    runs, prices = {}, {}
    for run in sorted(root.glob("*-s[0-9]")):
        if (run / "validation.csv").is_file():
            titles, values = read_csv(run / "validation.csv", ("price", "predicted"))
            prices[items_hash(titles)] = values["price"]
            runs[run.name] = {"items": items_hash(titles), "predicted": values["predicted"]}
            if (run / ITEMS).is_file():
                head_titles, head = read_csv(run / ITEMS, ("price", *head_columns(run / ITEMS)))
                prices[items_hash(head_titles)] = head.pop("price")
                runs[run.name]["head"] = {"items": items_hash(head_titles), **head}
    for path in sorted(kept.glob("*-s[0-9].json")) if kept.is_dir() else ():
        record = json.loads(path.read_text())
        runs.setdefault(record["run"], record)
    for name, record in runs.items():
        for part in (record, record.get("head")):
            if part is not None and part["items"] not in prices:
                raise SystemExit(
                    f"{name}: no run folder under {root} read the same validation items "
                    f"({part['items']}): run one of the study's runs there for their prices"
                )
            if part is not None:
                part["price"] = prices[part["items"]]
    return runs


def mae(truth: np.ndarray, predicted: np.ndarray) -> float:
    return float(np.abs(np.asarray(predicted) - truth).mean())


def decide(root: Path, kept: Path = KEPT) -> dict:
    """The decision by the rule above, from the runs found under `root` (`<arm>-s<seed>`) or kept."""
    runs = gather(root, kept)
    first = {
        name: mae(runs[f"{name}-s1"]["price"], runs[f"{name}-s1"]["predicted"])
        for name in arms()
        if f"{name}-s1" in runs
    }
    if "baseline" not in first:
        raise SystemExit(f"no baseline-s1 under {root} or in {kept}")
    result = {"split_seed": SPLIT_SEED, "steps": STEPS, "seed_1_mae": first, "arms": {}}
    for name in (n for family in FAMILIES.values() for n in family):
        pairs = {}
        for seed in (s for s in SEEDS if f"{name}-s{s}" in runs and f"baseline-s{s}" in runs):
            arm, base = runs[f"{name}-s{seed}"], runs[f"baseline-s{seed}"]
            if arm["items"] != base["items"]:
                raise SystemExit(
                    f"{name}-s{seed} and baseline-s{seed} did not read the same validation items"
                )
            pairs[seed] = (base["price"], np.asarray(arm["predicted"]), np.asarray(base["predicted"]))
        result["arms"][name] = rule(pairs)
    result["head"] = head_decision(runs)
    return result


def head_columns(path: Path) -> tuple[str, ...]:
    """The LLM's prices and each head's cross-fitted mix that `hidden_head.csv` holds."""
    with path.open(newline="") as handle:
        header = next(csv.reader(handle))
    return ("llm", *(HEADS[name] for name in HEADS if HEADS[name] in header))


def head_decision(runs: dict[str, dict]) -> dict | None:
    """Rule 6: the head's features chosen on seed 1, then its cross-fitted mix against the LLM
    alone on each seed's baseline adapter (`benchmarks/hidden_head.py` wrote `hidden_head.csv`
    there), pooled as the arms are."""
    heads = {s: runs[f"baseline-s{s}"].get("head") for s in SEEDS if f"baseline-s{s}" in runs}
    heads = {s: h for s, h in heads.items() if h}
    if 1 not in heads:
        return None
    first = {name: mae(heads[1]["price"], heads[1][col]) for name, col in HEADS.items() if col in heads[1]}
    chosen = min(first, key=first.get)
    col = HEADS[chosen]
    pairs = {s: (h["price"], np.asarray(h[col]), np.asarray(h["llm"])) for s, h in heads.items() if col in h}
    return {"chosen": chosen, "seed_1_mae": first, **rule(pairs)}


def rule(pairs: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> dict:
    """Rules 3 and 5 on (truth, candidate, baseline) prices a seed: each seed's gap, the pooled
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


def table(report: dict) -> str:
    """The decision as RESULTS shows it: each candidate against the baseline a seed, the pooled
    gap and whether the rule adopts it (`python -m benchmarks.tables`)."""
    rows = {
        f"{name} (`--model.price_distance {WEIGHT:g}`)" if name.startswith("distance") else name: r
        for name, r in report["arms"].items()
    }
    if report.get("head"):
        head = report["head"]
        rows[f"price head (`{head['chosen']}`) on the baseline's adapter, cross-fitted mix"] = head
    lines = [
        f"| candidate, against the baseline on validation ({STEPS} steps a run) | "
        + " | ".join(f"seed {s}: MAE, baseline's, gap" for s in SEEDS)
        + " | both seeds: gap (95% CI) | adopted |",
        "|---|" + "---:|" * len(SEEDS) + "---:|---|",
    ]
    for name, result in rows.items():
        seeds = {int(k): v for k, v in result["seeds"].items()}
        cells = [
            f"${seeds[s]['mae']:.2f}, ${seeds[s]['baseline_mae']:.2f}, ${seeds[s]['gap']:+.2f}"
            if s in seeds
            else "not run yet"
            for s in SEEDS
        ]
        pooled = result["pooled"]
        gap = gap_text(pooled) if pooled else "not run yet"
        # rule 5 wants every seed below the baseline: one above it already decides
        done = len(seeds) == len(SEEDS) or any(seed["gap"] >= 0 for seed in seeds.values())
        verdict = "yes" if result["adopted"] else "no" if done else "not yet"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {gap} | {verdict} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict | list[str]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("plan", help="print the runs")
    ending = commands.add_parser("final", help="print the test read's runs, from the decision")
    ending.add_argument("decision", type=Path, help="the decision's JSON (decide --out)")
    keeping = commands.add_parser("keep", help="keep a run's validation prices in benchmarks/")
    keeping.add_argument("run", type=Path)
    decision = commands.add_parser("decide", help="the decision, from the runs' validation prices")
    decision.add_argument("root", type=Path)
    decision.add_argument("--out", type=Path, help="write the decision as JSON here")
    args = parser.parse_args(argv)
    if args.command == "plan":
        lines = plan()
        print("\n".join(lines))
        return lines
    if args.command == "final":
        lines = final(json.loads(args.decision.read_text()))
        print("\n".join(lines))
        return lines
    if args.command == "keep":
        print(keep(args.run))
        return None
    result = decide(args.root)
    return report(result, args.out)


if __name__ == "__main__":
    main()
