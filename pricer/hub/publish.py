"""Publishing a run: stage the exact Hub repo folders in the run folder, then push each as one
commit. Staging always happens; uploading only when asked."""

from __future__ import annotations

import json
import platform
import shutil
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from pricer import hub_calls as hub
from pricer.data.curate import split_file
from pricer.data.splits import SPLITS
from pricer.hub.cards import dataset_card, model_card, price_histogram


def shown_source(source: str) -> str:
    """The data source as a reader on the Hub can follow it."""
    from pricer.data.raw import RAW_REPO
    from pricer.data.source import parse_source

    parsed = parse_source(source)
    if parsed.kind == "raw_hub":
        return RAW_REPO
    if parsed.kind == "raw_local":
        return f"{RAW_REPO} (a local copy of its raw/meta_categories files)"
    return parsed.location if parsed.on_hub else "a local curated dataset"


def shown_model(name: str, hub_id: str | None) -> str:
    """A model as a reader on the Hub can follow it: its Hub id, never a local path."""
    from pricer.base.load import is_local

    if not is_local(name):
        return name
    return hub_id or "a local model file"


def name_the_base_by_its_hub_id(folder: Path, hub_id: str | None) -> None:
    """peft writes the base's local path into adapter_config.json; on the Hub it must be the
    base's Hub id, or `AutoPeftModelForCausalLM.from_pretrained(repo)` fails on any other machine."""
    config_file = folder / "adapter_config.json"
    config = json.loads(config_file.read_text())
    base = config.get("base_model_name_or_path")
    if base and hub_id and base != hub_id:
        config["base_model_name_or_path"] = hub_id
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def name_the_base_in_the_recipe(folder: Path, hub_id: str | None) -> None:
    """The staged pricer.json names its base by its Hub id: the run folder's own recipe keeps
    the local path (it helps the machine that trained), the published one never does. With no
    Hub id, the file's name alone, and `Pricer.from_adapter` asks for base_model=."""
    from dataclasses import replace

    from pricer.base.load import is_local
    from pricer.read.recipe import read_recipe, stamp_recipe

    recipe = read_recipe(folder)
    if recipe is not None and is_local(recipe.base_model):
        named = replace(recipe, base_model=hub_id or recipe.base_model_id or Path(recipe.base_model).name)
        stamp_recipe(folder, named)  # the staged weights carry the staged recipe's hash
        named.save(folder)


def local_paths(trainer: L.Trainer, pl_module, datamodule) -> list[str]:
    """The paths of the training machine that a staged folder must not name: the run folder and
    its root, the Hugging Face home and caches, a local base (and its folder), a local data
    source and the curation cache."""
    from huggingface_hub import constants

    from pricer.base.load import is_local

    found = {Path(trainer.default_root_dir), Path(constants.HF_HOME), Path(constants.HF_HUB_CACHE)}
    found.add(Path(trainer.default_root_dir).parent)
    base = str(pl_module.hparams.get("base_model", ""))
    if base and is_local(base):
        found |= {Path(base).expanduser(), Path(base).expanduser().parent}
    for name in ("source", "cache_dir", "predict_source"):
        value = getattr(datamodule, name, None) if datamodule is not None else None
        if value and Path(str(value)).expanduser().exists():
            found.add(Path(str(value)).expanduser())
    shown = set()
    for path in found:
        for form in (path, path.resolve()):
            text = str(form).rstrip("/")
            if text.count("/") >= 2:  # never "/" or "/tmp" alone: those are words in any text
                shown.add(text)
    return sorted(shown, key=len, reverse=True)


def check_no_local_paths(folder: Path, paths: list[str]) -> None:
    """Every text file staged for the Hub is free of the training machine's paths."""
    for file in sorted(folder.rglob("*")):
        if not file.is_file() or file.suffix not in (".json", ".md", ".yaml", ".yml", ".txt", ".csv"):
            continue
        text = file.read_text(encoding="utf-8", errors="replace")
        for path in paths:
            if path in text:
                raise hub.HubPublishError(
                    f"{file}: names {path}, a path of this machine, in a folder staged for the Hub"
                )


def _items_per_step(datamodule, trainer: L.Trainer) -> int | None:
    per_process = getattr(datamodule, "batch_size", None)
    return per_process * trainer.world_size if per_process else None


def _hardware(trainer: L.Trainer) -> str:
    device = trainer.strategy.root_device
    if device.type == "cuda":
        return f"{trainer.world_size} x {torch.cuda.get_device_name(device)}"
    return f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)"


class HubPublisher(Callback):
    """Stage the curated dataset and the adapter as Hub repo folders in the run folder
    (`hub/dataset/`, `hub/model/`), with generated cards, and push them when asked.

    The model folder is staged at the end of fit and again after test, to carry the metrics.
    The dataset folder is staged only when pricer curated it.

    Args:
        model_repo: Hub id for the adapter (owner/name); null stages under a placeholder name.
        private: Create the model repo private.
        upload: Push the staged model folder (needs a login or HF_TOKEN); false stages only.
            Pushes happen last, after the adapter is saved and the test pass has run: a push
            that fails loses nothing and is reported with the command that retries it.
        base_model_id: The Hub model the base came from, for the card, when model.base_model is
            a local folder or .gguf file.
        license: The adapter's licence for the card (the base model's), e.g. llama3.1.
        card_templates: A folder with dataset_card.md / model_card.md to use instead of pricer's.
        dataset_repo: Hub id for the curated splits and their card; null stages under a
            placeholder name.
        dataset_private: Create the dataset repo private (the raw data has no licence: keep it so).
        dataset_upload: Push the staged dataset folder at the end of fit.
    """

    def __init__(
        self,
        model_repo: str | None = None,
        private: bool = True,
        upload: bool = False,
        base_model_id: str | None = None,
        license: str | None = None,
        card_templates: str | None = None,
        dataset_repo: str | None = None,
        dataset_private: bool = True,
        dataset_upload: bool = False,
    ) -> None:
        for option, repo in (("model_repo", model_repo), ("dataset_repo", dataset_repo)):
            if repo is not None:
                hub.check_repo_id(repo, f"HubPublisher.{option}")
        if upload and not model_repo:
            raise hub.HubPublishError("HubPublisher.upload is true but model_repo is not set")
        if dataset_upload and not dataset_repo:
            raise hub.HubPublishError("HubPublisher.dataset_upload is true but dataset_repo is not set")
        self.dataset_repo, self.dataset_private, self.dataset_upload = (
            dataset_repo,
            dataset_private,
            dataset_upload,
        )
        self.model_repo = model_repo
        self.private, self.upload = private, upload
        self.base_model_id, self.license = base_model_id, license
        self.card_templates = card_templates
        self.started = time.monotonic()
        self.fit_seconds: float | None = None
        # staged folders waiting to be pushed: (folder, repo, repo type, private), by kind
        self.pending: dict[str, tuple[Path, str, str, bool]] = {}

    @property
    def pushes(self) -> list[str]:
        """The repos this publisher will push to."""
        return [
            r
            for r, on in ((self.model_repo, self.upload), (self.dataset_repo, self.dataset_upload))
            if r and on
        ]

    def check_before_work(self) -> None:
        """A push that cannot happen stops the run before curation or model loading."""
        if self.pushes:
            hub.check_write_access(self.pushes)

    def push(self, trainer: L.Trainer) -> None:
        """Push what was staged, once everything else is done: the adapter saved, the test pass
        run and the model folder staged with its metrics. One commit a repo; every failure is
        reported together, each with the command that retries it with all its flags."""
        failures = []
        for folder, repo, repo_type, private in self.pending.values():
            try:
                hub.upload_folder(folder, repo, repo_type, self._message(trainer), private)
                print(
                    f"pushed {folder} to https://huggingface.co/{'datasets/' if repo_type == 'dataset' else ''}{repo}"
                )
            except hub.HubPublishError as error:
                failures.append(str(error))
        self.pending.clear()
        if failures:
            raise hub.HubPublishError("\n".join(failures))

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.upload or self.dataset_upload:
            # a push that cannot happen fails before any work
            from huggingface_hub import get_token

            if get_token() is None:
                raise hub.HubPublishError(
                    "HubPublisher.upload needs a token: `hf auth login` or set HF_TOKEN"
                )

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.started = time.monotonic()

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.fit_seconds = time.monotonic() - self.started
        if not trainer.is_global_zero:
            return
        self.stage_dataset(trainer)
        self.stage_model(trainer, pl_module)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Only fit's own test pass: a later `test` (another dataset, say) reports elsewhere and
        # must not put its numbers on the model's card.
        if trainer.is_global_zero and self.fit_seconds is not None:
            self.stage_model(trainer, pl_module)

    @property
    def model_name(self) -> str:
        return self.model_repo or "your-name/pricer-adapter"

    def stage_dataset(self, trainer: L.Trainer) -> Path | None:
        datamodule = trainer.datamodule
        curated = getattr(datamodule, "curated", None)
        if curated is None:
            return None  # a curated source is already published somewhere
        folder = Path(trainer.default_root_dir) / "hub" / "dataset"
        shutil.rmtree(folder, ignore_errors=True)
        (folder / "data").mkdir(parents=True)
        splits = {}
        for split in SPLITS:
            source = split_file(curated.folder, split)
            if source.is_file():
                shutil.copy2(source, folder / "data" / source.name)
                splits[split] = curated.accounting.splits.get(split, 0)
        curation = json.loads((curated.folder / "curation.json").read_text())
        # a staged folder names what a reader on the Hub can follow: never a local path
        curation["source"] = shown_source(curation["source"])
        curation["tokenizer"] = shown_model(curation["tokenizer"], self.base_model_id)
        prices = datamodule.load_splits()["train"]["price"] if "train" in splits else []
        price_histogram(prices, folder / "price_histogram.png", "training prices")
        repo = self.dataset_repo or "your-name/pricer-dataset"
        dataset_card(repo, curation, curated.accounting, splits, self.card_templates).save(
            folder / "README.md"
        )
        check_no_local_paths(folder, local_paths(trainer, trainer.lightning_module, datamodule))
        if self.dataset_upload:
            self.pending["dataset"] = (folder, repo, "dataset", self.dataset_private)
        return folder

    def stage_model(self, trainer: L.Trainer, pl_module: L.LightningModule) -> Path:
        run = Path(trainer.default_root_dir)
        folder = run / "hub" / "model"
        shutil.rmtree(folder, ignore_errors=True)
        metrics_file = run / "metrics.json"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else None
        pl_module.save_adapter(folder, metrics)  # peft rewrites README.md here: the card comes after
        hub_id = self.base_model_id or pl_module.recipe().base_model_id
        name_the_base_by_its_hub_id(folder, hub_id)
        name_the_base_in_the_recipe(folder, hub_id)
        if metrics and (run / "scatter.png").is_file():
            shutil.copy2(run / "scatter.png", folder / "scatter.png")
        hp = dict(pl_module.hparams)
        datamodule = trainer.datamodule
        rules = getattr(datamodule, "rules", None)
        card = model_card(
            repo_id=self.model_name,
            base_model=shown_model(hp["base_model"], self.base_model_id),
            dataset_repo=self.dataset_repo,
            categories=list(getattr(datamodule, "categories", [])),
            hyperparameters={
                "quantization": hp["quantization"]["weights"],
                **{f"lora_{k}": hp["lora"][k] for k in ("r", "alpha", "dropout")},
                **{k: hp["optimizer"][k] for k in ("learning_rate", "weight_decay", "warmup_ratio")},
                "lora_target_modules": pl_module.lora_target_modules,
                "epochs": trainer.max_epochs,
                "precision": str(trainer.precision),
                # items per optimizer step, and per forward pass (the rest is accumulation)
                "batch_size": _items_per_step(datamodule, trainer),
                "micro_batch_size": pl_module.micro_batch_size or getattr(datamodule, "batch_size", None),
            },
            metrics=metrics,
            license=self.license,
            training_time=f"{(self.fit_seconds or time.monotonic() - self.started) / 60:.1f} minutes",
            hardware=_hardware(trainer),
            price_range=(rules.min_price, rules.max_price) if rules else (0.5, 999.49),
            template_dir=self.card_templates,
            recipe=pl_module.recipe(),
        )
        card.save(folder / "README.md")
        check_no_local_paths(folder, local_paths(trainer, pl_module, datamodule))
        if self.upload and self.model_repo:
            self.pending["model"] = (folder, self.model_repo, "model", self.private)
        return folder

    @staticmethod
    def _message(trainer: L.Trainer) -> str:
        return f"pricer run {Path(trainer.default_root_dir).name}"
