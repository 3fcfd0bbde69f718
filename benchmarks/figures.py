"""A benchmark's figures: printed, and written as a small JSON file where asked, so a table can
be made from the file rather than typed."""

from __future__ import annotations

import json
from pathlib import Path


def report(result: dict, out: Path | None = None) -> dict:
    """Print `result` as JSON, write it to `out` when given, and return it."""
    text = json.dumps(result, indent=2)
    print(text)
    if out:
        Path(out).write_text(text + "\n")
    return result
