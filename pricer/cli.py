"""`python -m pricer`: LightningCLI with fit/validate/test/predict, plus `curate`."""

from __future__ import annotations

import sys

import lightning as L
import yaml
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger

from pricer.curate import CurationError
from pricer.data import PriceDataModule
from pricer.model import PriceModel
from pricer.quantization import QuantizationUnavailable, default_precision
from pricer.raw import SourceError
from pricer.run_folder import RunFolderError, place_run


class PricerTrainer(L.Trainer):
    """Lightning's Trainer, plus the `curate` subcommand."""

    def curate(self, model: L.LightningModule, datamodule: PriceDataModule) -> None:
        """Curate the data alone: read the raw metadata, apply the rules, write the cached splits.

        Accepts the same config as `fit`; only the `data` section (and the base model, for its
        tokenizer) matters. Users curate once and train many times.
        """
        curated = datamodule.curate()
        state = "reused from the cache" if curated.cached else "written"
        print(f"curated splits {state}: {curated.folder}")
        print(curated.accounting.table())


class LoggedConfig(SaveConfigCallback):
    """Saves the resolved config.yaml in the run folder and logs it to the loggers (W&B)."""

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        config = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
        for logger in trainer.loggers:
            logger.log_hyperparams({"config": config})


class PricerCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # The base model is named once; the tokenizer of the token rules follows it.
        parser.link_arguments("model.base_model", "data.tokenizer")
        parser.add_argument(
            "--run_name",
            type=str | None,
            default=None,
            help="Name of the run folder under trainer.default_root_dir (default: a timestamp).",
        )

    def before_instantiate_classes(self) -> None:
        if self.subcommand in (None, "curate"):
            return
        config = self.config[self.subcommand]
        self.run_dir, ckpt_path = place_run(config, config.get("run_name"), config.get("ckpt_path"))
        if "ckpt_path" in config:
            config.ckpt_path = ckpt_path
        if config.trainer.precision is None:
            config.trainer.precision = default_precision(config.trainer.accelerator)
        print(f"run folder: {self.run_dir} (precision {config.trainer.precision})")

    def _finish_loggers(self) -> None:
        # One command, one W&B run: finish it so the offline files are complete when we return.
        for logger in self.trainer.loggers:
            if isinstance(logger, WandbLogger) and logger._experiment is not None:
                logger.experiment.finish()

    def after_fit(self) -> None:
        # As the course did: train, then measure on the test split, in the same run folder.
        if self.trainer.world_size > 1:
            # A distributed sampler pads and shards the test split; measure on one device.
            print(
                f"test: run `python -m pricer test --model.adapter {self.run_dir / 'adapter'}` on one device"
            )
        elif "test" in self.datamodule.datasets:
            self.trainer.test(self.model, datamodule=self.datamodule)
        self._finish_loggers()

    def after_test(self) -> None:
        self._finish_loggers()

    def after_validate(self) -> None:
        self._finish_loggers()

    def after_predict(self) -> None:
        self._finish_loggers()

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {**LightningCLI.subcommands(), "curate": {"model", "datamodule"}}


def build_cli(args: list[str] | None = None, run: bool = True) -> PricerCLI:
    """The CLI as `python -m pricer` builds it (tests parse configs through this same call)."""
    return PricerCLI(
        PriceModel,
        PriceDataModule,
        trainer_class=PricerTrainer,
        save_config_callback=LoggedConfig,
        seed_everything_default=42,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )


def main(args: list[str] | None = None) -> None:
    try:
        build_cli(args)
    except (
        SourceError,
        CurationError,
        RunFolderError,
        QuantizationUnavailable,
        FileNotFoundError,
        PermissionError,
    ) as error:
        # Bad input is the user's to fix: say what and where, without a traceback.
        print(f"pricer: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    finally:
        # A command that failed midway must not leave its W&B run open for the next one.
        wandb = sys.modules.get("wandb")
        if wandb is not None and wandb.run is not None:
            wandb.finish(exit_code=1)
