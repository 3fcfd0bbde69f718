"""The recipe beside an adapter (`pricer.json`): how it was trained and how its prices are read.

fit writes it next to peft's files and it is pushed with them, so an adapter describes itself
(as litgpt keeps the hyperparameters beside every checkpoint). Its `model` and `data` sections
hold the options that decide a price as a config writes them (`model.quantization`,
`model.read`, `data.rules`, `data.neighbors`, ...), `trainer.precision` the precision its test
read under, `blend` what fit chose on validation: `Pricer` is built from it, and `test` and
`predict` take those options from it. Versioned, and checked when read: a field that is missing
or wrong is named.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import get_args

from pricer.base.options import QuantizationOptions
from pricer.base.precision import ComputeDtype
from pricer.base.quantization import Quantization
from pricer.data.prompt import NEIGHBOR_FORMATS, PREFIX, QUESTION
from pricer.data.rules import CurationRules
from pricer.read.blend import Blend
from pricer.read.dense import CpuRead
from pricer.read.distribution import Point
from pricer.read.options import ReadOptions
from pricer.read.stamp import StampError, check_stamp, recipe_digest, stamp_weights

RECIPE_FILE = "pricer.json"
# Lightning's trainer precisions; the mixed ones are read under the same autocast
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true")
VERSION = 2
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
# The model's option groups a recipe holds, and the data module's prompt options, with their types
MODEL_GROUPS = {"quantization": QuantizationOptions, "read": ReadOptions}
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


def _defaults(cls) -> dict:
    return asdict(cls())


@dataclass
class Recipe:
    """How an adapter was trained and is read: the options as a config writes them.

    A group given in part (`read={"beam": 5}`) is completed with its defaults.
    """

    base_model: str
    base_model_id: str | None = None  # the Hub model a local base came from
    quantization: dict = field(default_factory=lambda: _defaults(QuantizationOptions))
    read: dict = field(default_factory=lambda: _defaults(ReadOptions))
    rules: dict = field(default_factory=lambda: CurationRules().as_dict())
    # similar training items shown in the prompt (data.neighbors; 0: none) and their titles' budget
    neighbors: int = 0
    neighbor_title_tokens: int = 24
    neighbor_format: str = "lines"
    neighbor_min_similarity: float = 0.0
    # the trainer precision test read under: a mixed one is read under the same autocast
    precision: str = "32-true"
    # fit's choice on validation (pricer/read/blend.py): the LLM's weight, the interval's scale,
    # the nearest neighbours' share of the partner and the price head's share
    blend: dict = field(default_factory=lambda: Blend().as_dict())
    # the prompt's fixed words, which the adapter learned
    question: str = QUESTION
    prefix: str = PREFIX
    # the run's headline test metrics, when measured
    metrics: dict | None = None
    # the SHA-256 of each file saved beside the adapter for reading (pricer/read/adapter_files.py)
    files: dict | None = None

    def __post_init__(self) -> None:
        for name, default in (
            ("quantization", _defaults(QuantizationOptions)),
            ("read", _defaults(ReadOptions)),
            ("blend", Blend().as_dict()),
        ):
            value = getattr(self, name)
            if isinstance(value, dict):
                setattr(self, name, {**default, **value})

    @classmethod
    def from_model(
        cls,
        hparams,
        rules: CurationRules | None,
        base_model_id: str | None = None,
        blend: Blend | None = None,
        precision: str = "32-true",
        prompt: dict | None = None,
    ) -> Recipe:
        """The recipe of a PriceModel's hyperparameters (its groups as the config writes them),
        the curation rules it trained on, the blend fit chose (None: the LLM alone), the trainer
        precision it was measured under and the data module's prompt options (`PROMPT_OPTIONS`;
        none given: no neighbours)."""
        return cls(
            base_model=hparams["base_model"],
            base_model_id=base_model_id,
            **{group: dict(hparams[group]) for group in MODEL_GROUPS},
            rules=(rules or CurationRules()).as_dict(),
            precision=str(precision),
            blend=(blend or Blend()).as_dict(),
            **{
                name: kind(prompt[name]) for name, kind in PROMPT_OPTIONS.items() if prompt and name in prompt
            },
        )

    @property
    def curation_rules(self) -> CurationRules:
        return CurationRules(**self.rules)

    @property
    def max_digits(self) -> int:
        return max_digits(self.rules["max_price"])

    def model_options(self) -> dict:
        """The model options this recipe reads an adapter with, as the command line names them
        (`read.beam`, `quantization.type`, ...)."""
        return {
            f"{group}.{name}": value for group in MODEL_GROUPS for name, value in getattr(self, group).items()
        }

    def replaced(self, **changes) -> Recipe:
        """This recipe with `changes`, each named as a field; a group given in part keeps its
        other options (`read={"cpu": "4bit"}`)."""
        values = asdict(self)
        for name, value in changes.items():
            if name not in values:
                raise TypeError(f"a recipe has no setting {name!r} (it has: {', '.join(values)})")
            both = isinstance(values[name], dict) and isinstance(value, dict)
            values[name] = {**values[name], **value} if both else value
        return Recipe(**values)

    def with_metrics(self, metrics: dict | None) -> Recipe:
        headline = {k: metrics[k] for k in HEADLINE if k in metrics} if metrics else None
        return Recipe(**{**asdict(self), "metrics": headline})

    def with_files(self, files: dict[str, str]) -> Recipe:
        return Recipe(**{**asdict(self), "files": files or None})

    def to_json(self) -> dict:
        data: dict = {
            "format": FORMAT,
            "version": VERSION,
            "model": {"base_model": self.base_model, **{g: dict(getattr(self, g)) for g in MODEL_GROUPS}},
            "data": {"rules": dict(self.rules), **{name: getattr(self, name) for name in PROMPT_OPTIONS}},
            "trainer": {"precision": self.precision},
            "blend": dict(self.blend),
            "prompt": {"question": self.question, "prefix": self.prefix},
            "base_model_id": self.base_model_id,
            "metrics": self.metrics,
        }
        if self.files:
            data["files"] = self.files
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
                "(train the adapter again with this pricer)"
            )
        layout = {
            "model": ["base_model", *MODEL_GROUPS],
            "data": ["rules", *PROMPT_OPTIONS],
            "trainer": ["precision"],
            "blend": list(Blend().as_dict()),
            "prompt": ["question", "prefix"],
        }
        groups = {f"model.{g}": list(_defaults(kind)) for g, kind in MODEL_GROUPS.items()}
        values: dict = {}
        for section, names in layout.items():
            part = data.get(section)
            if not isinstance(part, dict):
                raise RecipeError(f"{where}: the section {section!r} is missing")
            unknown = set(part) - set(names)
            if unknown:
                raise RecipeError(f"{where}: {section}: unknown fields {sorted(unknown)}")
            for name in names:
                if name not in part:
                    raise RecipeError(f"{where}: {section}.{name} is missing")
                value = part[name]
                place = f"{section}.{name}"
                if place in groups:
                    if not isinstance(value, dict):
                        raise RecipeError(f"{where}: {place} must be an object of its options, got {value!r}")
                    extra, missing = set(value) - set(groups[place]), set(groups[place]) - set(value)
                    if extra:
                        raise RecipeError(f"{where}: {place}: unknown fields {sorted(extra)}")
                    if missing:
                        raise RecipeError(f"{where}: {place}.{sorted(missing)[0]} is missing")
                if section == "blend":
                    values.setdefault("blend", {})[name] = value
                else:
                    values[name] = value
        recipe = cls(
            **values,
            base_model_id=data.get("base_model_id"),
            metrics=data.get("metrics"),
            files=data.get("files"),
        )
        recipe.check(where)
        return recipe

    def check(self, where: str = RECIPE_FILE) -> None:
        """Every field of the right kind, or a RecipeError naming it as the JSON places it."""

        def fail(place: str, value, expected: str) -> None:
            raise RecipeError(f"{where}: {place} must be {expected}, got {value!r}")

        q, r, b = self.quantization, self.read, self.blend
        choices = {
            "model.quantization.weights": (q["weights"], get_args(Quantization)),
            "model.quantization.type": (q["type"], ("nf4", "fp4")),
            "model.quantization.compute_dtype": (q["compute_dtype"], get_args(ComputeDtype)),
            "model.read.point": (r["point"], get_args(Point)),
            "model.read.cpu": (r["cpu"], get_args(CpuRead)),
            "trainer.precision": (self.precision, PRECISIONS),
            "data.neighbor_format": (self.neighbor_format, NEIGHBOR_FORMATS),
        }
        for place, (value, allowed) in choices.items():
            if value not in allowed:
                fail(place, value, f"one of {allowed}")
        files = self.files
        if files is not None and not (
            isinstance(files, dict)
            and all(isinstance(k, str) and isinstance(v, str) and len(v) == 64 for k, v in files.items())
        ):
            fail("files", files, "a mapping of file names to SHA-256 hex digests")
        if not isinstance(self.base_model, str) or not self.base_model:
            fail("model.base_model", self.base_model, "a Hub id, folder or .gguf file")
        if self.base_model_id is not None and not isinstance(self.base_model_id, str):
            fail("base_model_id", self.base_model_id, "a Hub id or null")
        for place, value in (
            ("model.quantization.double_quant", q["double_quant"]),
            ("model.read.shared_prefix", r["shared_prefix"]),
        ):
            if not isinstance(value, bool):
                fail(place, value, "true or false")
        for place, value, least in (
            ("data.neighbors", self.neighbors, 0),
            ("model.read.beam", r["beam"], 1),
            ("data.neighbor_title_tokens", self.neighbor_title_tokens, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                fail(place, value, "a whole number, 0 or more" if least == 0 else "a positive whole number")
        ranges = {
            "model.read.interval_coverage": (r["interval_coverage"], lambda v: 0 < v < 1, "between 0 and 1"),
            "model.read.min_mass": (r["min_mass"], lambda v: 0 <= v < 1, "in [0, 1)"),
            "data.neighbor_min_similarity": (self.neighbor_min_similarity, lambda v: 0 <= v < 1, "in [0, 1)"),
            "blend.weight": (b["weight"], lambda v: 0 <= v <= 1, "a number in [0, 1]"),
            "blend.knn_share": (b["knn_share"], lambda v: 0 <= v <= 1, "a number in [0, 1]"),
            "blend.head_weight": (b["head_weight"], lambda v: 0 <= v <= 1, "a number in [0, 1]"),
            "blend.interval_scale": (b["interval_scale"], lambda v: v > 0, "a positive number"),
        }
        for place, (value, inside, expected) in ranges.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not inside(value):
                fail(place, value, expected)
        if (self.question, self.prefix) != (QUESTION, PREFIX):
            raise RecipeError(
                f"{where}: prompt.question and prompt.prefix differ from this pricer's prompt "
                f"({QUESTION!r}, {PREFIX!r}); it would not read this adapter's prices as trained"
            )
        if not isinstance(self.rules, dict):
            fail("data.rules", self.rules, "an object of curation rules")
        unknown = set(self.rules) - {f.name for f in fields(CurationRules)}
        if unknown:
            raise RecipeError(f"{where}: data.rules: unknown rules {sorted(unknown)}")
        try:
            CurationRules(**self.rules)
        except (TypeError, ValueError) as error:
            raise RecipeError(f"{where}: data.rules: {error}") from None
        if self.metrics is not None and not isinstance(self.metrics, dict):
            fail("metrics", self.metrics, "an object or null")


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
    trained = {k: recipe.quantization[k] for k in ("weights", "type", "double_quant")}
    if trained["weights"] != "4bit" or quantization["weights"] != "4bit":
        trained = {"weights": trained["weights"]}
    return [
        f"model.quantization.{name}={quantization[name]!r} (trained: {value!r})"
        for name, value in trained.items()
        if quantization[name] != value
    ]
