"""Folders on disk, shared by every stage: a folder written in full then moved into place (over
an older one, or only where none is yet), and the error for a run folder that is not what a
command needs. Imports nothing from pricer."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


class RunFolderError(ValueError):
    """A run folder or checkpoint asked for does not exist; the message says where it looked."""


def replace_folder(new: Path, final: Path) -> None:
    """Move a folder written in full into place, over an older one, so that at every moment
    `final` is the old folder or the new one, never a mix (a crash between the two renames
    leaves the old one beside, named `.<name>.old-<pid>`)."""
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    if final.exists():
        os.replace(final, old)
    os.replace(new, final)
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)


def place_folder(new: Path, final: Path) -> bool:
    """Move a folder written in full into place unless one is there already (a cache entry that
    another process finished first holds the same), so a half-written one is never read; returns
    whether this one was placed."""
    final.parent.mkdir(parents=True, exist_ok=True)
    if not final.exists():
        try:
            os.replace(new, final)
            return True
        except OSError:
            if not final.exists():
                raise
    shutil.rmtree(new, ignore_errors=True)
    return False
