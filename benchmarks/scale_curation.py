"""Curation at scale: the real sample replicated to N lines, curated with worker processes.

Shows that memory stays flat as a category grows (Electronics has 1.6M records): prints the
wall time and the peak resident memory of the main process and of the largest worker.

    python benchmarks/scale_curation.py --sample ../shared/data/amazon-2023-sample \
        --gguf <SmolLM2-135M-Instruct.Q4_1.gguf> --lines 1000000 --num-proc 2
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import tempfile
import time
from pathlib import Path

from pricer.base.load import tokenizer_source
from pricer.data.curate import CurationSpec, curate
from pricer.data.rules import CurationRules


def replicate(sample: Path, lines: int, out: Path) -> Path:
    """A raw folder whose Electronics file cycles through the sample's records, each copy a new
    product (its own parent_asin), so nothing is dropped as a duplicate."""
    records = []
    for path in sorted((sample / "raw" / "meta_categories").glob("meta_*.jsonl")):
        records += [json.loads(line) for line in path.open()]
    target = out / "raw" / "meta_categories" / "meta_Electronics.jsonl"
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w") as handle:
        for i in range(lines):
            record = dict(records[i % len(records)])
            record["parent_asin"] = f"R{i:09d}"
            handle.write(json.dumps(record) + "\n")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=Path, required=True)
    parser.add_argument("--gguf", required=True, help="tokenizer source: a .gguf file, folder or Hub id")
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--num-proc", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="pricer-scale-"))
    source = replicate(args.sample, args.lines, work / "source")
    tokenizer = tokenizer_source(args.gguf)
    spec = CurationSpec(
        source=str(source),
        categories=["Electronics"],
        rules=CurationRules(),
        tokenizer=args.gguf,
        train_size=None,
        val_size=500,
        test_size=2000,
        seed=42,
    )
    start = time.perf_counter()
    curated = curate(spec, tokenizer, work / "cache", num_proc=args.num_proc)
    seconds = time.perf_counter() - start
    main_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    worker_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    acc = curated.accounting
    print(
        json.dumps(
            {
                "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores",
                "lines": args.lines,
                "num_proc": args.num_proc,
                "seconds": round(seconds, 1),
                "lines_per_second": round(args.lines / seconds),
                "peak_rss_main_mib": round(main_peak),
                "peak_rss_largest_worker_mib": round(worker_peak),
                "read": acc.read,
                "kept": acc.kept,
                "dropped": dict(acc.dropped),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
