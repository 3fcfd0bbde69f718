"""The tables in the docs, made from the benchmarks' output files.

Each table sits in a Markdown page between `<!-- table: NAME -->` and `<!-- /table -->` and is
written by one benchmark's `table(report)` from one JSON file that benchmark wrote (`TABLES`).
`python -m benchmarks.tables` rewrites every marked table from its file; `--check` changes
nothing and exits 1 naming each table that differs, as a test does, so a table's figures are
never typed by hand and a stale one shows.

    python benchmarks/t4_check.py --arithmetic --json benchmarks/t4_arithmetic.json
    python -m benchmarks.tables
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PAGES = ("README.md", "docs/*.md", "benchmarks/RESULTS.md")
BLOCK = re.compile(r"(<!-- table: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /table -->)", re.S)


def _course_texts(report: dict) -> str:
    from benchmarks.course_texts import table

    return table(report)


def _prompt_lengths(report: dict) -> str:
    from benchmarks.prompt_lengths import table

    return table(report)


def _t4_arithmetic(report: dict) -> str:
    from benchmarks.t4_memory import arithmetic_table

    return "\n".join(arithmetic_table(report["estimate"], report["budget_gib"], report["seq_len"]))


def _objective_study(report: dict) -> str:
    from benchmarks.objective_study import table

    return table(report)


# name -> (the JSON file under benchmarks/, the function that makes its table)
TABLES = {
    "course_texts": ("course_texts.json", _course_texts),
    "t4_arithmetic": ("t4_arithmetic.json", _t4_arithmetic),
    "prompt_lengths": ("prompt_lengths.json", _prompt_lengths),
    "objective_study": ("objective_study.json", _objective_study),
}


class TableError(ValueError):
    """A marked table that cannot be made; the message names the page and the table."""


def render(name: str, where: str) -> str:
    if name not in TABLES:
        raise TableError(f"{where}: no table named {name!r} (known: {', '.join(sorted(TABLES))})")
    file, make = TABLES[name]
    path = REPO / "benchmarks" / file
    if not path.is_file():
        raise TableError(
            f"{where}: table {name!r} needs {path.relative_to(REPO)}, which no benchmark has written"
        )
    return make(json.loads(path.read_text())).rstrip("\n") + "\n"


def pages(root: Path = REPO) -> list[Path]:
    return sorted({p for pattern in PAGES for p in root.glob(pattern)})


def rewritten(page: Path) -> tuple[str, list[str]]:
    """The page with every marked table made again, and the names of those that changed."""
    text, changed = page.read_text(), []

    def replace(match: re.Match) -> str:
        body = render(match["name"], str(page.relative_to(REPO) if page.is_relative_to(REPO) else page))
        if body != match["body"]:
            changed.append(match["name"])
        return match.group(1) + body + match.group(4)

    return BLOCK.sub(replace, text), changed


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a table differs")
    args = parser.parse_args(argv)
    stale = []
    for page in pages():
        text, changed = rewritten(page)
        stale += [f"{page.relative_to(REPO)}: table {name!r}" for name in changed]
        if changed and not args.check:
            page.write_text(text)
    for line in stale:
        print(("differs from its file: " if args.check else "made again: ") + line)
    if args.check and stale:
        raise SystemExit(1)
    return stale


if __name__ == "__main__":
    main()
