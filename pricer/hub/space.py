"""The Space's settings: which model it serves, what it says about it, and its examples.

`space/pricer_space.json` carries the defaults; `python -m pricer deploy` writes the published
ids, the run's metrics, the curation rules and test-split examples into the staged copy. The
environment overrides the models: `PRICER_BASE_MODEL` and `PRICER_ADAPTER`. A local adapter
folder inside a run folder also brings that run's metrics and test examples.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pricer.read.baselines import BASELINE_NAMES

SETTINGS_FILE = "pricer_space.json"


# pricer/, above pricer/hub/: the package the Space gets a copy of.
PACKAGE = Path(__file__).resolve().parent.parent


class StartUpError(ValueError):
    """A Space setting that cannot be used; the message names it and what to set."""


def start_up_limits(environ) -> tuple[int, int]:
    """(requests priced at once, requests that may wait) from PRICER_CONCURRENCY (default 1)
    and PRICER_QUEUE_SIZE (default 32): whole numbers of 1 or more, checked before anything
    loads."""
    limits = []
    for name, default in (("PRICER_CONCURRENCY", "1"), ("PRICER_QUEUE_SIZE", "32")):
        value = environ.get(name, default).strip()
        if not value.isascii() or not value.isdigit() or int(value) < 1:
            raise StartUpError(f"{name}={value!r}: must be a whole number of 1 or more (default {default})")
        limits.append(int(value))
    return limits[0], limits[1]


@dataclass
class SpaceSettings:
    """What the Space serves and shows."""

    base_model: str
    adapter: str | None = None
    dataset: str | None = None
    categories: list[str] = field(default_factory=list)
    train_items: int | None = None
    metrics: dict | None = None
    examples: list[dict] = field(default_factory=list)

    @classmethod
    def load(cls, folder: Path, environ: dict | None = None) -> SpaceSettings:
        environ = os.environ if environ is None else environ
        path = folder / SETTINGS_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"{path}: cannot read the Space settings: {error}") from error
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"{path}: unknown settings {sorted(unknown)}")
        settings = cls(**data)
        # The base a person names replaces the adapter's own (a local copy, say).
        settings.base_override = environ.get("PRICER_BASE_MODEL") or None
        settings.base_model = settings.base_override or settings.base_model
        settings.adapter = environ.get("PRICER_ADAPTER") or settings.adapter
        if settings.adapter and Path(settings.adapter).expanduser().is_dir():
            settings._read_run_folder(Path(settings.adapter).expanduser().resolve().parent)
        return settings

    def _read_run_folder(self, run: Path) -> None:
        """A local adapter in a run folder: that run's metrics and test examples, if there."""
        import pyarrow.parquet as pq

        metrics = run / "metrics.json"
        if metrics.is_file():
            self.metrics = json.loads(metrics.read_text(encoding="utf-8"))
        test = run / "hub" / "dataset" / "data" / "test-00000-of-00001.parquet"
        if test.is_file():
            self.examples = examples_from_rows(pq.read_table(test).slice(0, 6).to_pylist())
        train = test.with_name("train-00000-of-00001.parquet")
        if train.is_file():
            self.train_items = pq.read_metadata(train).num_rows
        config = run / "config.yaml"
        if config.is_file():
            import yaml

            resolved = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
            data = resolved.get("data") or {}
            self.categories = list(data.get("categories") or self.categories)

    def pricer(self, device: str | None = None):
        """The model the Space serves: the adapter as its run measured it (its pricer.json), or
        the bare base model when there is no adapter."""
        from pricer.read.recipe import Recipe
        from pricer.read.serving import Pricer

        if self.adapter:
            return Pricer.from_adapter(
                self.adapter, base_model=getattr(self, "base_override", None), device=device
            )
        return Pricer(Recipe(base_model=self.base_model), None, device=device)

    def about(self) -> str:
        """A short note on what the model learnt from and how accurate it is."""
        what = ", ".join(c.replace("_", " ") for c in self.categories) or "Amazon products"
        lines = [f"Base model **{_shown(self.base_model)}**{_adapter_phrase(self.adapter)}."]
        trained = f"{self.train_items:,} " if self.train_items else ""
        source = f" ([dataset](https://huggingface.co/datasets/{self.dataset}))" if self.dataset else ""
        lines.append(f"Trained to price {trained}{what} products{source} from their text.")
        if self.metrics and "mae" in self.metrics:
            m = self.metrics
            low, high = m.get("mae_ci95", [m["mae"], m["mae"]])
            lines.append(
                f"On {m['n']:,} held-out test products its prices were off by **${m['mae']:,.2f}** on "
                f"average (95% interval ${low:,.2f}-{high:,.2f}); {m['hit_rate']:.0%} were within $40 "
                "or 20% of the real price."
            )
            coverage = m.get("interval_coverage")
            if coverage:
                lines[-1] += (
                    f" Its {coverage['nominal']:.0%} range held the real price for {coverage['measured']:.0%} "
                    "of them."
                )
            blend = m.get("blend") or {}
            if blend.get("weight", 1) < 1 and "llm_alone" in blend:
                lines[-1] += (
                    f" The price blends the LLM's with a classical model's ({partner_text(blend)}, chosen on "
                    f"validation); the LLM alone was off by ${blend['llm_alone']['mae']:,.2f}."
                )
            if blend.get("head_weight", 0) > 0:
                lines[-1] += (
                    f" The LLM's price mixes in, at {blend['head_weight']:g} in log price, a price head's: a "
                    "ridge regression on its last hidden states, its weight chosen on validation."
                )
            baselines = {
                k: v for k, v in (m.get("baselines") or {}).items() if isinstance(v, dict) and "mae" in v
            }
            if baselines:
                name, best = min(baselines.items(), key=lambda kv: kv[1]["mae"])
                label = BASELINE_NAMES.get(name, name)
                lines[-1] += f" The best simple baseline ({label}) was off by ${best['mae']:,.2f}."
        return "\n\n".join(lines)


def partner_text(blend: dict) -> str:
    """The blend's weights for the Space's note, e.g. "0.6 LLM, 0.4 a TF-IDF ridge"."""
    weight, near = blend.get("weight", 1), blend.get("knn_share", 0)
    if not near:
        return f"{weight:g} LLM, {1 - weight:g} a TF-IDF ridge"
    return (
        f"{weight:g} LLM, {1 - weight:g} the classical model: {1 - near:g} of it a TF-IDF ridge, "
        f"{near:g} the 5 most similar training products"
    )


def _adapter_phrase(adapter: str | None) -> str:
    """How the page names the adapter: a Hub id as it is; a local adapter by its run folder (the
    folder itself is always called `adapter`); none as the untrained base."""
    if not adapter:
        return ", with no adapter: the untrained base model"
    path = Path(adapter).expanduser()
    if path.exists():
        run = path.resolve().parent.name
        return (
            f" with the LoRA adapter of run **{run}**"
            if path.name == "adapter"
            else f" with the LoRA adapter **{path.name}**"
        )
    return f" with the LoRA adapter **{adapter}**"


def example_label(title: str, limit: int = 60) -> str:
    """A title cut at a word boundary to at most `limit` characters, with an ellipsis."""
    if len(title) <= limit:
        return title
    cut = title[: limit - 1].rsplit(" ", 1)[0].rstrip(" ,;:-")
    return f"{cut}…"


def _shown(model: str | None) -> str:
    """A Hub id as it is; a local file or folder by its name (its path means nothing to a visitor)."""
    if not model:
        return "(none)"
    path = Path(model).expanduser()
    return path.name if path.exists() else model


def examples_from_rows(rows: list[dict]) -> list[dict]:
    """Examples for the Space from curated rows: title and description (the text's other lines)."""
    examples = []
    for row in rows:
        title = row.get("title") or ""
        text = row.get("text") or ""
        description = text.split("\n", 1)[1] if text.startswith(title) and "\n" in text else text
        examples.append({"title": title, "description": description.strip(), "price": row.get("price")})
    return examples


def app_folder() -> Path:
    """The Space's source: `space/` in a checkout, `pricer/space_app` in an installed wheel."""
    package = PACKAGE
    for candidate in (package / "space_app", package.parent / "space"):
        if (candidate / "app.py").is_file():
            return candidate
    raise FileNotFoundError(
        f"the Space's app.py is neither in {package / 'space_app'} nor {package.parent / 'space'}"
    )


APP_FILES = ("app.py", "requirements.txt", "README.md")
# Folders a wheel adds inside the package; the Space needs the Python modules only.
NOT_CODE = shutil.ignore_patterns("__pycache__", "*.pyc", "cards", "configs", "space_app")


def stage_space(folder: Path, settings: SpaceSettings, hardware: str = "t4-small") -> Path:
    """The exact Space repo: app, requirements, a card naming the models and dataset, the
    settings, and a copy of the pricer package so the Space builds prompts with this code."""
    from huggingface_hub import SpaceCard

    source = app_folder()
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for name in APP_FILES:
        shutil.copy2(source / name, folder / name)
    shutil.copytree(PACKAGE, folder / "pricer", ignore=NOT_CODE)
    (folder / SETTINGS_FILE).write_text(json.dumps(asdict(settings), indent=2) + "\n", encoding="utf-8")
    card = SpaceCard.load(folder / "README.md")
    card.data.models = [m for m in (settings.base_model, settings.adapter) if m]
    card.data.datasets = [settings.dataset] if settings.dataset else []
    card.data.suggested_hardware = hardware
    card.save(folder / "README.md")
    return folder


def deploy_space(
    trainer,
    model,
    datamodule,
    space_repo: str | None = None,
    upload: bool = False,
    private: bool = False,
    hardware: str = "t4-small",
    examples: int = 6,
) -> Path:
    """`python -m pricer deploy`: stage the Space for a trained run in `<run>/hub/space/`, and
    push it when asked. The Space serves the published adapter (its recipe decides how), names
    the published dataset (or a curated source that is a Hub id; never a local path), quotes the
    run's test metrics and offers test-split products as examples."""
    from pricer import hub_calls as hub
    from pricer.files import RunFolderError
    from pricer.hub.publish import HubPublisher

    if space_repo is not None:
        hub.check_repo_id(space_repo, "deploy --space_repo")
    if upload and not space_repo:
        raise hub.HubPublishError("deploy --upload needs --space_repo owner/name")
    if upload:
        hub.check_write_access([space_repo])
    run = Path(trainer.default_root_dir)
    if not (run / "adapter" / "adapter_config.json").is_file():
        raise RunFolderError(f"deploy: {run} holds no trained adapter; name a trained run with --run_name")
    publisher = next((c for c in trainer.callbacks if isinstance(c, HubPublisher)), None)
    adapter = publisher.model_repo if publisher else None
    base = (publisher.base_model_id if publisher else None) or model.hparams.base_model
    if not adapter:
        # a Space without the adapter would serve the untrained base under this run's claims
        raise hub.HubPublishError(
            "deploy: the run's adapter is not published (HubPublisher.model_repo is not set), so the "
            "Space would serve the untrained base model under the trained one's metrics; publish the "
            "adapter first (HubPublisher.model_repo, upload: true), or try the run locally with "
            "PRICER_ADAPTER=<run>/adapter python space/app.py"
        )
    if upload and (Path(base).expanduser().exists() or base.lower().endswith(".gguf")):
        raise hub.HubPublishError(
            f"deploy --upload: the base model {base!r} is a local file; set HubPublisher.base_model_id to its Hub id"
        )
    splits = datamodule.load_splits()
    test = splits["test"].select(range(min(examples, len(splits["test"])))) if "test" in splits else []
    metrics = run / "metrics.json"
    # the dataset the card links: the published splits, or a curated source that is a Hub id
    # (never a local path, which means nothing on the Hub)
    parsed = datamodule.data_source
    source = parsed.location if parsed.kind == "curated_hub" else None
    dataset = (publisher.dataset_repo if publisher else None) or source
    settings = SpaceSettings(
        base_model=base,
        adapter=adapter,
        dataset=dataset,
        categories=list(datamodule.categories),
        train_items=len(splits["train"]) if "train" in splits else None,
        metrics=json.loads(metrics.read_text()) if metrics.is_file() else None,
        examples=examples_from_rows(list(test)),
    )
    folder = stage_space(run / "hub" / "space", settings, hardware)
    print(f"Space staged: {folder}")
    if settings.metrics is None:
        print(f"deploy: {metrics} is missing; the Space will not quote accuracy (run `test` first)")
    if upload:
        hub.upload_folder(folder, space_repo, "space", f"pricer Space for {run.name}", private)
        print(f"Space pushed: https://huggingface.co/spaces/{space_repo}")
    return folder
