"""The Trainer the command line builds (with `curate` and `deploy` beside fit/validate/test/
predict), the checks of its options and of evaluation names and predict's source, and the
resolved config written into the run folder."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import lightning as L
import yaml
from lightning.pytorch.cli import SaveConfigCallback

from pricer.data.module import PriceDataModule
from pricer.data.raw import SourceError
from pricer.options import OptionError


def check_trainer_options(trainer: dict) -> None:
    """pricer runs each optimizer step itself (so a pass that runs out of memory can be
    retried smaller), which Lightning's own clipping and accumulation cannot be combined with."""
    if trainer.get("gradient_clip_val"):
        raise OptionError(
            f"trainer.gradient_clip_val={trainer['gradient_clip_val']}: pricer clips in its own "
            "optimizer step; set model.optimizer.max_grad_norm instead (the course's 0.3 is the default)"
        )
    if (trainer.get("accumulate_grad_batches") or 1) != 1:
        raise OptionError(
            f"trainer.accumulate_grad_batches={trainer['accumulate_grad_batches']}: pricer accumulates "
            "inside each optimizer step; set data.batch_size (items a step) and model.micro_batch_size "
            "(items a pass), or FitBatchSize.effective_batch_size"
        )


# pricer's meaning of the arguments the subcommands add (Lightning's own text describes its
# registry and HPC keywords, which pricer's run folders do not use)
METHOD_ARGS = """Args:
    ckpt_path: A checkpoint to resume (fit) or read. A `.ckpt` file, or `last`: the last
        checkpoint of the run named by --run_name (without one, of the latest run under
        trainer.default_root_dir that has one).
    verbose: Print the metrics table at the end (validate, test).
    weights_only: torch.load's weights_only. True loads tensors and plain types alone (pricer's
        checkpoints need nothing more); null leaves it to Lightning."""


def _described(method, summary: str):
    """Lightning's method under pricer's one-line summary (the subcommand's help), its signature
    kept and its arguments described as pricer uses them."""

    @functools.wraps(method)
    def described(self, *args, **kwargs):
        return method(self, *args, **kwargs)

    described.__doc__ = f"{summary}\n\n{METHOD_ARGS}"
    return described


def check_evaluation_name(name: str | None, subcommand: str) -> None:
    """`--evaluation` is a folder under <run>/evaluations/ for `test`: one plain name."""
    if name is None:
        return
    if subcommand != "test":
        raise OptionError(f"--evaluation {name}: names a test report's folder; {subcommand} has none")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name) or ".." in name:
        raise OptionError(
            f"--evaluation {name!r}: one folder name of letters, digits, '.', '_' and '-' "
            "(it goes under <run>/evaluations/)"
        )


def check_predict_source(source: str) -> None:
    """data.predict_source is a JSONL of products, or a curated dataset predict can read."""
    from pricer.data.curated import load_curated

    path = Path(source).expanduser()
    if path.suffix in (".jsonl", ".json"):
        if not path.is_file():
            raise SourceError(f"data.predict_source {source}: no such file")
        return  # each line is checked once the tokenizer is loaded, before a run starts
    if path.is_file() and path.suffix not in (".parquet",):
        raise SourceError(
            f"data.predict_source {source}: a {path.suffix or 'plain'} file; predict reads a JSONL of "
            "products (one JSON object a line: title, description, ...) or a curated dataset "
            "(a folder or Hub id with prompt and title columns)"
        )
    from datasets.utils import logging as datasets_logging

    shown = datasets_logging.is_progress_bar_enabled()
    datasets_logging.disable_progress_bar()  # a check, not a load: no bars in its one line
    try:
        splits = load_curated(source)
    except Exception as error:  # datasets' own errors for a folder that holds no dataset
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise SourceError(
            f"data.predict_source {source}: not a curated dataset predict can read ({first})"
        ) from None
    finally:
        if shown:
            datasets_logging.enable_progress_bar()
    split = splits["test"] if "test" in splits else next(iter(splits.values()), None)
    if split is None or not {"prompt", "title"} <= set(split.column_names):
        raise SourceError(f"data.predict_source {source}: no split with prompt and title columns")


class PricerTrainer(L.Trainer):
    """Lightning's Trainer, plus the `curate` and `deploy` subcommands."""

    fit = _described(
        L.Trainer.fit,
        "Train the LoRA adapter, then measure it on the test split; everything lands in one run folder.",
    )
    validate = _described(
        L.Trainer.validate, "Read the validation split's prices and report val_mae for each read-out."
    )
    test = _described(
        L.Trainer.test,
        "Measure a trained run on a test split: metrics beside baselines, predictions and a chart.",
    )
    predict = _described(
        L.Trainer.predict,
        "Price products (a JSONL of product texts, a curated dataset, or the test split) into predict.csv.",
    )

    def curate(self, model: L.LightningModule, datamodule: PriceDataModule) -> None:
        """Curate the data alone: read the raw metadata, apply the rules, write the cached splits.

        Accepts the same config as `fit`; only the `data` section (and the base model, for its
        tokenizer) matters. Users curate once and train many times.
        """
        curated = datamodule.curate()
        state = "reused from the cache" if curated.cached else "written"
        print(f"curated splits {state}: {curated.folder}")
        print(curated.accounting.table())

    def deploy(
        self,
        model: L.LightningModule,
        datamodule: PriceDataModule,
        space_repo: str | None = None,
        upload: bool = False,
        private: bool = False,
        hardware: str = "t4-small",
        examples: int = 6,
    ) -> Path:
        """Stage the Gradio Space for a trained run in `<run>/hub/space/` and push it when asked.

        Takes the run's config (and `--run_name`): the Space serves the published adapter
        (HubPublisher.model_repo) on its base model, names the dataset (HubPublisher.dataset_repo), quotes the
        run's test metrics and offers test-split products as examples.

        Args:
            space_repo: The Space's Hub id (owner/name).
            upload: Push the staged folder as one commit (needs a login or HF_TOKEN).
            private: Create the Space private.
            hardware: The hardware the card suggests (an 8B base in 4-bit needs a GPU: t4-small).
            examples: How many test-split products to offer as one-click examples.
        """
        from pricer.hub.space import deploy_space

        return deploy_space(self, model, datamodule, space_repo, upload, private, hardware, examples)


class LoggedConfig(SaveConfigCallback):
    """Saves the resolved config.yaml in the run folder and logs it to the loggers (W&B)."""

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        config = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
        for logger in trainer.loggers:
            logger.log_hyperparams({"config": config})
