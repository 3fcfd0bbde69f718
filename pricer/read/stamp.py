"""The recipe's hash in the adapter weights' own header.

fit writes the SHA-256 of an adapter's recipe (`pricer.json`, its fields as read, less the test
metrics that fit adds after saving) into the safetensors header of the weights beside it, and
every read compares: a recipe edited by hand, or weights moved beside another run's recipe, is
refused in one line instead of read as something it was not.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

WEIGHTS_FILE = "adapter_model.safetensors"
STAMP = "pricer_recipe_sha256"


class StampError(ValueError):
    """A recipe that does not match the weights beside it; the message names both."""


def recipe_digest(recipe_json: dict) -> str:
    """The digest of a recipe's JSON (`Recipe.to_json()`), its metrics left out."""
    contract = {k: v for k, v in recipe_json.items() if k != "metrics"}
    return hashlib.sha256(json.dumps(contract, sort_keys=True).encode()).hexdigest()


def stamp_weights(folder: Path, digest: str) -> None:
    """Write `digest` into the header of the adapter weights in `folder`."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    weights = Path(folder) / WEIGHTS_FILE
    with safe_open(weights, "pt") as handle:
        metadata = dict(handle.metadata() or {})
    save_file(load_file(weights), weights, metadata={**metadata, STAMP: digest})


def check_stamp(folder: Path, digest: str, recipe_path: Path) -> None:
    """The weights in `folder` carry `digest`, or a StampError. Weights that are missing or do not
    read as safetensors are left to the adapter's own file checks, which name them."""
    from safetensors import safe_open

    weights = Path(folder) / WEIGHTS_FILE
    try:
        with safe_open(weights, "pt") as handle:
            stamp = (handle.metadata() or {}).get(STAMP)
    except Exception:  # no file, or not safetensors: said where the weights are checked
        return
    if stamp is None:
        raise StampError(
            f"{weights} carries no hash of a pricer recipe: these weights were not saved by fit with "
            f"{recipe_path}, which cannot be checked against them"
        )
    if stamp != digest:
        raise StampError(
            f"{recipe_path} is not the recipe fit saved with these weights (it differs from the hash "
            f"in {WEIGHTS_FILE}'s header): restore it as fit wrote it, or retrain"
        )
