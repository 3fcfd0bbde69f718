"""The recipe beside an adapter (`pricer.json`): how it was trained and how its prices are read.

fit writes it next to peft's files and it is pushed with them, so an adapter describes itself
(as litgpt keeps the hyperparameters and prompt style beside every checkpoint):
`Pricer.from_adapter` rebuilds exactly what was measured from it alone: the base model, its
quantization, the prompt and the curation rules that shape the text, the read-out. Versioned,
and checked when read: a field that is missing or wrong is named.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import get_args

from pricer.base.precision import ComputeDtype
from pricer.base.quantization import Quantization
from pricer.data.prompt import NEIGHBOR_FORMATS, PREFIX, QUESTION
from pricer.data.rules import CurationRules
from pricer.read.reading import Point
from pricer.read.stamp import StampError, check_stamp, recipe_digest, stamp_weights

RECIPE_FILE = "pricer.json"
# Lightning's trainer precisions; the mixed ones are read under the same autocast
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true")
VERSION = 1
FORMAT = "pricer-recipe"
# The headline numbers a card or a Space quotes; the whole report stays in metrics.json.
HEADLINE = (
    "n",
    "mae",
    "mae_ci95",
    "rmsle",
    "hit_rate",
    "median_ae",
    "interval_coverage",
    "weights_from",
    "blend",
    "test_reads_before",
)


# The PriceModel options a recipe's reading fields stand for, as a config writes them -> recipe
# field: a trained module's recipe (Recipe.from_model) and the options an adapter is read with
# (Recipe.model_options). The module's quantization is the form its base is loaded in, the
# recipe's `weights`.
MODEL_OPTIONS = {
    "quantization.weights": "weights",
    "quantization.type": "quant_type",
    "quantization.double_quant": "double_quant",
    "quantization.compute_dtype": "compute_dtype",
    "read.point": "point",
    "read.interval_coverage": "coverage",
    "read.beam": "beam",
    "read.min_mass": "min_mass",
}


def _option(hparams, name: str):
    group, field_ = name.split(".")
    return hparams[group][field_]


# The data module's prompt settings a recipe records, with their types: the neighbours shown, as
# the adapter trained with them.
PROMPT_OPTIONS = {
    "neighbors": int,
    "neighbor_title_tokens": int,
    "neighbor_format": str,
    "neighbor_min_similarity": float,
}


class RecipeError(ValueError):
    """A pricer.json that cannot be used; the message names the file and the field."""


def max_digits(max_price: float) -> int:
    """Whole-dollar digits the reader needs for the rules' highest price (999.49 -> 3)."""
    return max(1, len(str(math.floor(max_price + 0.5))))


@dataclass
class Recipe:
    """How an adapter was trained and read. Field groups match the JSON's sections."""

    # base
    base_model: str
    base_model_id: str | None = None
    # quantization
    quantization: str = "4bit"
    quant_type: str = "nf4"
    double_quant: bool = True
    compute_dtype: str = "auto"
    # prompt
    question: str = QUESTION
    prefix: str = PREFIX
    rules: dict = field(default_factory=lambda: CurationRules().as_dict())
    # similar training items shown in the prompt (data.neighbors; 0: none) and their titles' budget
    neighbors: int = 0
    neighbor_title_tokens: int = 24
    neighbor_format: str = "lines"
    neighbor_min_similarity: float = 0.0
    # read
    point: str = "median"
    coverage: float = 0.8
    beam: int = 32
    min_mass: float = 1e-4
    max_digits: int = 3
    weights: str = "4bit"  # the weights' form when read: as loaded for training
    # fit's choice on validation (pricer/read/blend.py): the LLM's share of the price in log price
    # beside the TF-IDF model saved with the adapter (1: the LLM alone), the interval's scale
    blend_weight: float = 1.0
    interval_scale: float = 1.0
    # the nearest neighbours' share of the partner (0: the TF-IDF ridge alone)
    blend_neighbors: float = 0.0
    # the trainer precision test read under: a mixed one is read under the same autocast
    precision: str = "32-true"
    # the run's headline test metrics, when measured
    metrics: dict | None = None
    # the SHA-256 of each file saved beside the adapter for reading (pricer/read/saved_read.py)
    files: dict | None = None

    SECTIONS = {
        "base": ("base_model", "base_model_id"),
        "quantization": ("quantization", "quant_type", "double_quant", "compute_dtype"),
        "prompt": (
            "question",
            "prefix",
            "rules",
            "neighbors",
            "neighbor_title_tokens",
            "neighbor_format",
            "neighbor_min_similarity",
        ),
        "read": (
            "point",
            "coverage",
            "beam",
            "min_mass",
            "max_digits",
            "weights",
            "blend_weight",
            "interval_scale",
            "blend_neighbors",
            "precision",
        ),
    }

    @classmethod
    def from_model(
        cls,
        hparams,
        rules: CurationRules | None,
        base_model_id: str | None = None,
        blend=None,
        precision: str = "32-true",
        prompt: dict | None = None,
    ) -> Recipe:
        """The recipe of a PriceModel's hyperparameters, the curation rules it trained on, the
        blend fit chose (a pricer.read.blend.Blend; None: the LLM alone), the trainer precision
        it was measured under and the data module's prompt settings (`PROMPT_OPTIONS`; none
        given: no neighbours)."""
        rules = rules or CurationRules()
        return cls(
            base_model=hparams["base_model"],
            base_model_id=base_model_id,
            quantization=hparams["quantization"]["weights"],
            **{field: _option(hparams, option) for option, field in MODEL_OPTIONS.items()},
            rules=rules.as_dict(),
            max_digits=max_digits(rules.max_price),
            blend_weight=blend.weight if blend is not None else 1.0,
            interval_scale=blend.interval_scale if blend is not None else 1.0,
            blend_neighbors=blend.neighbors if blend is not None else 0.0,
            precision=str(precision),
            **{
                name: kind(prompt[name]) for name, kind in PROMPT_OPTIONS.items() if prompt and name in prompt
            },
        )

    @property
    def curation_rules(self) -> CurationRules:
        return CurationRules(**self.rules)

    def model_options(self) -> dict:
        """The PriceModel options this recipe reads an adapter with (`read.beam`, ...)."""
        return {option: getattr(self, field) for option, field in MODEL_OPTIONS.items()}

    def reading_settings(self) -> dict:
        """The Pricer settings this recipe stands for: the base's form, the read-out, the blend,
        the precision and the curation rules that shape the prompt."""
        return {
            "quantization": self.weights,
            "quant_type": self.quant_type,
            "double_quant": self.double_quant,
            "compute_dtype": self.compute_dtype,
            "point": self.point,
            "coverage": self.coverage,
            "beam": self.beam,
            "min_mass": self.min_mass,
            "max_digits": self.max_digits,
            "blend_weight": self.blend_weight,
            "interval_scale": self.interval_scale,
            "blend_neighbors": self.blend_neighbors,
            "precision": self.precision,
            "rules": self.curation_rules,
            "neighbors": self.neighbors,
            "neighbor_title_tokens": self.neighbor_title_tokens,
            "neighbor_format": self.neighbor_format,
            "neighbor_min_similarity": self.neighbor_min_similarity,
        }

    def with_metrics(self, metrics: dict | None) -> Recipe:
        headline = {k: metrics[k] for k in HEADLINE if k in metrics} if metrics else None
        return Recipe(**{**asdict(self), "metrics": headline})

    def with_files(self, files: dict[str, str]) -> Recipe:
        return Recipe(**{**asdict(self), "files": files or None})

    def to_json(self) -> dict:
        values = asdict(self)
        data: dict = {"format": FORMAT, "version": VERSION}
        for section, names in self.SECTIONS.items():
            data[section] = {name: values[name] for name in names}
        data["metrics"] = values["metrics"]
        if values["files"]:
            data["files"] = values["files"]
        return data

    def save(self, folder: Path) -> Path:
        path = Path(folder) / RECIPE_FILE
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def from_json(cls, data: object, where: str = RECIPE_FILE) -> Recipe:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise RecipeError(f'{where}: not a pricer recipe (no "format": "{FORMAT}")')
        if data.get("version") != VERSION:
            raise RecipeError(
                f"{where}: version {data.get('version')!r}; this pricer reads version {VERSION} "
                "(upgrade pricer, or pass the settings to Pricer.from_adapter)"
            )
        values: dict = {"metrics": data.get("metrics"), "files": data.get("files")}
        for section, names in cls.SECTIONS.items():
            part = data.get(section)
            if not isinstance(part, dict):
                raise RecipeError(f"{where}: the section {section!r} is missing")
            unknown = set(part) - set(names)
            if unknown:
                raise RecipeError(f"{where}: {section}: unknown fields {sorted(unknown)}")
            for name in names:
                if name not in part:
                    raise RecipeError(f"{where}: {section}.{name} is missing")
                if name in part:
                    values[name] = part[name]
        recipe = cls(**values)
        recipe.check(where)
        return recipe

    def check(self, where: str = RECIPE_FILE) -> None:
        """Every field of the right kind, or a RecipeError naming it."""
        section = {name: s for s, names in self.SECTIONS.items() for name in names}

        def fail(name: str, expected: str) -> None:
            place = f"{section[name]}.{name}" if name in section else name
            raise RecipeError(f"{where}: {place} must be {expected}, got {getattr(self, name)!r}")

        choices = {
            "quantization": get_args(Quantization),
            "weights": get_args(Quantization),
            "quant_type": ("nf4", "fp4"),
            "compute_dtype": get_args(ComputeDtype),
            "point": get_args(Point),
            "precision": PRECISIONS,
            "neighbor_format": NEIGHBOR_FORMATS,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                fail(name, f"one of {allowed}")
        files = self.files
        if files is not None and not (
            isinstance(files, dict)
            and all(isinstance(k, str) and isinstance(v, str) and len(v) == 64 for k, v in files.items())
        ):
            fail("files", "a mapping of file names to SHA-256 hex digests")
        if not isinstance(self.base_model, str) or not self.base_model:
            fail("base_model", "a Hub id, folder or .gguf file")
        if self.base_model_id is not None and not isinstance(self.base_model_id, str):
            fail("base_model_id", "a Hub id or null")
        if not isinstance(self.double_quant, bool):
            fail("double_quant", "true or false")
        for name, least in (("neighbors", 0), ("beam", 1), ("max_digits", 1), ("neighbor_title_tokens", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                fail(name, "a whole number, 0 or more" if least == 0 else "a positive whole number")
        ranges = {
            "coverage": (lambda v: 0 < v < 1, "between 0 and 1"),
            "min_mass": (lambda v: 0 <= v < 1, "in [0, 1)"),
            "neighbor_min_similarity": (lambda v: 0 <= v < 1, "in [0, 1)"),
            "blend_weight": (lambda v: 0 <= v <= 1, "a number in [0, 1]"),
            "blend_neighbors": (lambda v: 0 <= v <= 1, "a number in [0, 1]"),
            "interval_scale": (lambda v: v > 0, "a positive number"),
        }
        for name, (inside, expected) in ranges.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not inside(value):
                fail(name, expected)
        if not isinstance(self.question, str) or not isinstance(self.prefix, str) or not self.prefix:
            fail("prefix", "text")
        if (self.question, self.prefix) != (QUESTION, PREFIX):
            raise RecipeError(
                f"{where}: prompt.question and prompt.prefix differ from this pricer's prompt "
                f"({QUESTION!r}, {PREFIX!r}); it would not read this adapter's prices as trained"
            )
        if not isinstance(self.rules, dict):
            fail("rules", "an object of curation rules")
        known = {f.name for f in fields(CurationRules)}
        unknown = set(self.rules) - known
        if unknown:
            raise RecipeError(f"{where}: prompt.rules: unknown rules {sorted(unknown)}")
        try:
            rules = CurationRules(**self.rules)
        except (TypeError, ValueError) as error:
            raise RecipeError(f"{where}: prompt.rules: {error}") from None
        if self.max_digits != max_digits(rules.max_price):
            fail(
                "max_digits",
                f"{max_digits(rules.max_price)}, the digits of prompt.rules.max_price {rules.max_price}",
            )
        if self.metrics is not None and not isinstance(self.metrics, dict):
            fail("metrics", "an object or null")


def stamp_recipe(folder: Path, recipe: Recipe) -> None:
    """Write the recipe's digest into the adapter weights' header beside it (`stamp.py`)."""
    stamp_weights(folder, recipe_digest(recipe.to_json()))


def read_recipe(folder: Path) -> Recipe | None:
    """The recipe in an adapter folder, checked, and checked against the weights beside it;
    None when the folder has none."""
    path = Path(folder) / RECIPE_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RecipeError(f"{path}: cannot be read: {error}") from None
    recipe = Recipe.from_json(data, str(path))
    try:
        check_stamp(folder, recipe_digest(recipe.to_json()), path)
    except StampError as error:
        raise RecipeError(str(error)) from None
    return recipe


def adapter_recipe(folder: Path, where: str = "model.adapter") -> Recipe:
    """The recipe an adapter is read by; a folder without one is refused in one line that says
    what the folder is and what to do."""
    recipe = read_recipe(folder)
    if recipe is not None:
        return recipe
    folder = Path(folder)
    if (folder / "adapter" / RECIPE_FILE).is_file():
        raise RecipeError(f"{where} {folder}: a run folder; its adapter is {folder / 'adapter'}")
    raise RecipeError(
        f"{where} {folder}: no {RECIPE_FILE} beside the adapter. pricer reads an adapter as its run "
        "trained and measured it (base model, prompt, neighbours, read-out) from that file: copy it "
        "with the adapter's other files"
    )


def base_differences(recipe: Recipe | None, quantization: dict) -> list[str]:
    """How the base a model is about to load (its `model.quantization` group) differs from the
    one its adapter trained on: `model.quantization.type='nf4' (trained: 'fp4')`, ...; empty when
    they agree or nothing is known."""
    if recipe is None:
        return []
    trained = {"weights": recipe.quantization, "type": recipe.quant_type, "double_quant": recipe.double_quant}
    if recipe.quantization != "4bit" or quantization["weights"] != "4bit":
        trained = {"weights": recipe.quantization}
    return [
        f"model.quantization.{name}={quantization[name]!r} (trained: {value!r})"
        for name, value in trained.items()
        if quantization[name] != value
    ]
