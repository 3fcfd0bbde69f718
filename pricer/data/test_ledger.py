"""Every read of a test split, recorded beside it: a test split read for a choice is no longer a
test, so the reports say how often, and by which runs, theirs had been read before.

The ledger is a JSON-lines file beside the curated splits (`test_reads.jsonl`), one line a read:
when, the run folder, the stage that read it, the SHA-256 of the run's config, what was served,
and how many items. A split curated elsewhere (a Hub dataset, a local curated folder) keeps its ledger
in pricer's cache under a name made of its source and revision.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from pathlib import Path

LEDGER = "test_reads.jsonl"


def ledger_for(curated_folder: Path | None, cache_dir: Path, source: str, revision: str) -> Path:
    """Where a test split's reads are recorded: beside its curated splits, or in the cache."""
    if curated_folder is not None:
        return Path(curated_folder) / LEDGER
    name = hashlib.sha256(f"{source}@{revision}".encode()).hexdigest()[:16]
    return Path(cache_dir) / "test-reads" / f"{name}.jsonl"


def earlier_reads(ledger: Path) -> list[dict]:
    """The reads recorded so far, oldest first (a line that is not a read is skipped)."""
    if not ledger.is_file():
        return []
    reads = []
    for line in ledger.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict):
            reads.append(entry)
    return reads


def record_read(
    ledger: Path, run: str, stage: str, config: Path | None, served: str | None, items: int
) -> dict:
    """Append this read to the ledger; returns how often, and by which runs, the split had been
    read before it: {"count": n, "runs": [...]} (the runs in order, each once)."""
    before = earlier_reads(ledger)
    entry = {
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "run": run,
        "stage": stage,
        "config_sha256": hashlib.sha256(config.read_bytes()).hexdigest()
        if config and config.is_file()
        else None,
        "served": served,
        "items": items,
    }
    ledger.parent.mkdir(parents=True, exist_ok=True)
    with ledger.open("a", encoding="utf-8") as file:
        file.write(json.dumps(entry) + "\n")
    runs = list(dict.fromkeys(str(r.get("run")) for r in before))
    return {"count": len(before), "runs": runs}


def run_name(folder: str) -> str:
    """A read's run as a report may name it without this machine's paths: the run folder's name,
    and an evaluation's as `<run>/evaluations/<name>`."""
    path = Path(folder)
    if path.parent.name == "evaluations":
        return f"{path.parent.parent.name}/evaluations/{path.name}"
    return path.name
