"""pricer's curation against the course's, with the course's tokenizer, on the sample's texts.

The sample's records hold the course's own result: each `description` is the text body the
course's `Item` made with Llama 3.1's tokenizer (scrubbed, cut at 160 tokens, decoded with its
spaces cleaned up, the title line taken off), so the course's text of an item is its scrubbed
title, cleaned up as the decoding did, a line break and that body.
pricer curates the same records with `configs/appliances.yaml`'s rules and Llama 3's tokenizer,
and each item falls in one row of the table:

- equal: pricer's text is the course's, character for character;
- dropped: pricer's rules drop the record (the reason is curation's own);
- a trailing space: the course's text ends in a space (its cut ended on one), pricer's scrub
  strips it;
- processed twice: pricer's text is the course's scrubbed or cleaned up once more. pricer reads
  the course's output here, not the raw record: the course's clean-up joined words ("measures
  .178" became "measures.178"), which its scrub had already passed and pricer's now drops as a
  part number, and a " ." the course's decoding left pricer's cleans up;
- cut elsewhere: one text is the other with some last words less (the 160-token cut, made again
  on text the course already cut, lands a word earlier or later);
- other: anything else, with the first differing characters shown.

    python -m benchmarks.course_texts --source ../shared/data/amazon-2023-sample \
        --tokenizer <folder of Llama 3's tokenizer.json> --out benchmarks/course_texts.json
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import yaml

from pricer.base.load import load_tokenizer, tokenizer_source
from pricer.data.records import curate_chunk
from pricer.data.rules import CurationRules, scrub

REPO = Path(__file__).resolve().parent.parent
APPLIANCES = REPO / "configs" / "appliances.yaml"
KINDS = ("equal", "dropped", "a trailing space", "processed twice", "cut elsewhere", "other")


def course_text(record: dict, rules: CurationRules, tokenizer) -> str:
    title = tokenizer.clean_up_tokenization(scrub(record["title"], rules.part_number_length))
    return f"{title}\n{record['description'][0]}"


def _prefix(a: str, b: str) -> bool:
    return b.startswith(a.rstrip()) or a.startswith(b.rstrip())


def kind_of(ours: str | None, theirs: str, rules: CurationRules, tokenizer) -> str:
    if ours is None:
        return "dropped"
    if ours == theirs:
        return "equal"
    if ours == theirs.rstrip():
        return "a trailing space"
    title, _, body = theirs.partition("\n")
    scrubbed = f"{title}\n{scrub(body, rules.part_number_length)}"
    if any(_prefix(ours, again) for again in (scrubbed, tokenizer.clean_up_tokenization(scrubbed))):
        return "processed twice"
    if _prefix(ours, theirs):
        return "cut elsewhere"
    return "other"


def first_difference(ours: str, theirs: str) -> str:
    at = next(
        (i for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b), min(len(ours), len(theirs))
    )
    return f"at {at}: pricer {ours[at : at + 30]!r}, course {theirs[at : at + 30]!r}"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--source", type=Path, required=True, help="the sample's root folder")
    parser.add_argument("--tokenizer", required=True, help="Llama 3's tokenizer (a folder or Hub id)")
    parser.add_argument("--config", type=Path, default=APPLIANCES)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    rules = CurationRules(**yaml.safe_load(args.config.read_text())["data"].get("rules", {}))
    path = args.source / "raw" / "meta_categories" / "meta_Appliances.jsonl"
    raw_lines = path.read_bytes().splitlines()
    records = [json.loads(line) for line in raw_lines]
    lines = list(enumerate(raw_lines, start=1))
    result = curate_chunk(path.name, "Appliances", lines, rules, tokenizer_source(args.tokenizer))
    ours = {row["title"]: row["text"] for row in result.rows}
    tokenizer = load_tokenizer(args.tokenizer)
    drops = Counter(reason for reason, _ in result.drops)
    kinds: Counter = Counter()
    examples: dict[str, list[str]] = {}
    for record in records:
        theirs = course_text(record, rules, tokenizer)
        text = ours.get(record["title"])
        kind = kind_of(text, theirs, rules, tokenizer)
        kinds[kind] += 1
        if kind not in ("equal", "dropped") and len(examples.setdefault(kind, [])) < 3:
            examples[kind].append(f"{record['title'][:50]!r} {first_difference(text, theirs)}")
    report = {
        "config": str(args.config.relative_to(REPO)),
        "items": len(records),
        "kinds": {k: kinds[k] for k in KINDS},
        "dropped_by": dict(sorted(drops.items())),
        "examples": examples,
    }
    print(table(report))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return report


def table(report: dict) -> str:
    """The Markdown table docs/curation.md shows (a test checks it is this file's)."""
    lines = ["| pricer's text against the course's | items |", "|---|---:|"]
    for kind in KINDS:
        count = report["kinds"][kind]
        why = ""
        if kind == "dropped" and report["dropped_by"]:
            why = " (" + ", ".join(f"{r}: {n}" for r, n in report["dropped_by"].items()) + ")"
        lines.append(f"| {kind}{why} | {count:,} |")
    lines.append(f"| all of the sample's Appliances | {report['items']:,} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
