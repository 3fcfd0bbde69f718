"""The appliances job's prompt lengths, measured with Llama 3's real tokenizer on the sample: what
the T4 arithmetic (benchmarks/t4_check.py --arithmetic, docs/training.md) sizes its sequences by.

It curates the sample's Appliances with configs/appliances.yaml's rules and neighbour settings
through pricer's own data module (train: every usable item left after validation and test), and
counts each training sequence's tokens as training feeds them (BOS, prompt and the price's 3
tokens):

- per split and at k=0 and the config's k: median, p99, max;
- one neighbour line ("\n- title: $price", with the line break before it) for every training
  item, as any of them can be shown: median, max, and how many pass the 29 tokens once assumed
  (24 of title, 5 besides);
- the bound for the full data set: the longest sequence without neighbours (every text is cut at
  `max_tokens`, so the sample's longest is the cut's) plus the block's header, its blank line
  and k of the longest neighbour line, each counted apart (no merge across them, so never
  fewer tokens than in the prompt); t4_check sizes its sequences by it.

    python -m benchmarks.prompt_lengths --source ../shared/data/amazon-2023-sample \
        --tokenizer <folder of Llama 3's tokenizer.json> --out benchmarks/prompt_lengths.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
from pathlib import Path

import numpy as np
import yaml

from pricer.data.module import PriceDataModule
from pricer.data.prompt import NEIGHBORS_HEADER, neighbor_block
from pricer.data.rules import CurationRules

REPO = Path(__file__).resolve().parent.parent
APPLIANCES = REPO / "configs" / "appliances.yaml"
ASSUMED_LINE = 29


def summary(lengths: list[int]) -> dict:
    values = np.array(lengths)
    return {
        "n": len(values),
        "median": float(np.median(values)),
        "p99": float(np.percentile(values, 99)),
        "max": int(values.max()),
    }


def sequence_lengths(dm: PriceDataModule) -> dict[str, list[int]]:
    dm.setup("fit")
    dm.setup("test")
    return {
        split: [len(ids) for ids in dm.datasets[split]["input_ids"]]
        for split in ("train", "validation", "test")
    }


def table(report: dict) -> str:
    """The Markdown table of a report this benchmark wrote (benchmarks/tables.py)."""
    k, line, bound = report["k"], report["neighbor_line_tokens"], report["bound"]
    rows = ["| Llama 3 tokens | items | median | p99 | longest |", "|---|---:|---:|---:|---:|"]
    for key, shown in (("sequence_tokens_k0", "no neighbours"), (f"sequence_tokens_k{k}", f"{k} neighbours")):
        for split in ("train", "validation", "test"):
            row = report[key][split]
            rows.append(
                f"| {split} sequence, {shown} | {row['n']} | {row['median']:g} | {row['p99']:g} | {row['max']} |"
            )
    rows.append(
        f"| one neighbour line (each training item) | {line['n']} | {line['median']:g} | {line['p99']:g} | {line['max']} |"
    )
    rows.append(
        f"| the bound t4_check sizes by: {bound['longest_sequence_k0']} + {bound['block_header_tokens']} (header)"
        f" + {bound['separator_tokens']} (blank line) + {k} x {bound['longest_line']} | | | | {bound['seq_len']} |"
    )
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--source", required=True, help="a raw source holding Appliances (the sample)")
    parser.add_argument("--tokenizer", required=True, help="Llama 3's tokenizer (a folder or Hub id)")
    parser.add_argument("--config", type=Path, default=APPLIANCES)
    parser.add_argument("--val-size", type=int, default=50)
    parser.add_argument("--test-size", type=int, default=50)
    parser.add_argument("--out", type=Path, default=None, help="the JSON file to write")
    args = parser.parse_args(argv)

    data = yaml.safe_load(args.config.read_text())["data"]
    k, title_tokens = int(data.get("neighbors", 0)), int(data.get("neighbor_title_tokens", 24))
    rules = CurationRules(**data.get("rules", {}))
    result: dict = {
        "config": str(args.config.relative_to(REPO)),
        "k": k,
        "neighbor_title_tokens": title_tokens,
    }
    with tempfile.TemporaryDirectory() as cache:
        common = dict(
            source=args.source,
            tokenizer=args.tokenizer,
            categories=["Appliances"],
            rules=rules,
            train_size=None,
            val_size=args.val_size,
            test_size=args.test_size,
            seed=int(data.get("seed", 42)),
            cache_dir=cache,
            num_proc=1,
        )
        plain = PriceDataModule(**common, neighbors=0)
        plain.prepare_data()
        without = sequence_lengths(plain)
        tokenizer = plain.tokenizer
        backend = getattr(tokenizer, "backend_tokenizer", None)
        result["tokenizer_json_sha256"] = (
            hashlib.sha256(backend.to_str().encode()).hexdigest() if backend is not None else None
        )
        with_k = PriceDataModule(**common, neighbors=k, neighbor_title_tokens=title_tokens)
        with_k.prepare_data()
        shown = sequence_lengths(with_k)
        index = with_k.neighbor_prompts.retriever()
        lines = [
            len(
                tokenizer("\n" + neighbor_block([item]).split("\n", 1)[1], add_special_tokens=False)[
                    "input_ids"
                ]
            )
            for item in index.shown(list(range(len(index.prices))))
        ]
    header = len(tokenizer(NEIGHBORS_HEADER, add_special_tokens=False)["input_ids"])
    result["sequence_tokens_k0"] = {split: summary(v) for split, v in without.items()}
    result[f"sequence_tokens_k{k}"] = {split: summary(v) for split, v in shown.items()}
    longest_plain = max(max(v) for v in without.values())
    longest_line = max(lines)
    result["neighbor_line_tokens"] = {
        **summary(lines),
        f"over_{ASSUMED_LINE}": int(sum(n > ASSUMED_LINE for n in lines)),
    }
    # a blank line before the block and one after it, as the prompt lays it out
    separators = len(tokenizer("\n\n", add_special_tokens=False)["input_ids"])
    result["bound"] = {
        "longest_sequence_k0": longest_plain,
        "longest_line": longest_line,
        "neighbor_title_tokens": title_tokens,
        "block_header_tokens": header,
        "separator_tokens": separators,
        "seq_len": longest_plain + header + separators + k * longest_line,
        "measured_max": max(max(v) for v in shown.values()),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
