"""Where every record went: read = kept + dropped, each drop with its reason and examples."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

# How many examples (file:line and what was wrong) are kept per reason; counts are always whole.
EXAMPLES_PER_REASON = 20


@dataclass
class Accounting:
    """Counts of records read, kept and dropped (by reason), overall and per category."""

    read: int = 0
    usable: int = 0  # passed every rule and was not a duplicate (before sampling and split sizes)
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    read_by_category: Counter = field(default_factory=Counter)
    kept_by_category: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    splits: dict[str, int] = field(default_factory=dict)

    def drop(self, reason: str, where: str | None = None, count: int = 1) -> None:
        self.dropped[reason] += count
        if where is not None:
            shown = self.examples.setdefault(reason, [])
            if len(shown) < EXAMPLES_PER_REASON:
                shown.append(where)

    @property
    def total_dropped(self) -> int:
        return sum(self.dropped.values())

    def check(self) -> None:
        """Every record read is either kept or dropped: nothing is lost silently."""
        if self.kept + self.total_dropped != self.read:
            raise AssertionError(
                f"accounting does not add up: read {self.read}, kept {self.kept}, "
                f"dropped {self.total_dropped}"
            )

    def to_dict(self) -> dict:
        return {
            "read": self.read,
            "usable": self.usable,
            "kept": self.kept,
            "dropped": dict(sorted(self.dropped.items())),
            "read_by_category": dict(sorted(self.read_by_category.items())),
            "kept_by_category": dict(sorted(self.kept_by_category.items())),
            "splits": self.splits,
            "examples": self.examples,
        }

    @classmethod
    def from_dict(cls, data: dict) -> Accounting:
        return cls(
            read=data["read"],
            usable=data.get("usable", 0),
            kept=data["kept"],
            dropped=Counter(data["dropped"]),
            read_by_category=Counter(data["read_by_category"]),
            kept_by_category=Counter(data["kept_by_category"]),
            examples=data.get("examples", {}),
            splits=data.get("splits", {}),
        )

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> Accounting:
        return cls.from_dict(json.loads(path.read_text()))

    def table(self) -> str:
        """The accounting as a Markdown table, as printed after curation and shown in cards."""
        rows = [
            ("read", self.read),
            ("usable (passed every rule)", self.usable),
            ("kept in splits", self.kept),
        ]
        rows += [(f"dropped: {reason}", n) for reason, n in sorted(self.dropped.items())]
        rows += [(f"split: {name}", n) for name, n in self.splits.items()]
        return count_table("records", rows)


def count_table(heading: str, rows: list[tuple[str, int]]) -> str:
    """Named counts as a Markdown table, the names under `heading` (curation's accounting, the
    neighbours' in the prompt)."""
    width = max(len(heading), *(len(name) for name, _ in rows))
    lines = [f"| {heading:<{width}} | {'count':>9} |", f"|{'-' * (width + 2)}|{'-' * 10}:|"]
    lines += [f"| {name:<{width}} | {n:>9,} |" for name, n in rows]
    return "\n".join(lines)
