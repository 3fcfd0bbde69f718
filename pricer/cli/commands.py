"""The LightningCLI subclass behind `python -m pricer`: its subcommands (fit, validate, test,
predict, curate, deploy), the checks run before anything is built, and where each run writes."""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import sys

import lightning as L
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import WandbLogger

from pricer.base.load import check_model_name
from pricer.base.precision import default_precision, emulated_bf16_warning
from pricer.cli.adapter_read import retrieve_as_the_adapter_did, serve_the_runs_read_out
from pricer.cli.config_files import check_config_files
from pricer.cli.parse_errors import PricerParser
from pricer.cli.progress import ProgressLog
from pricer.cli.run_folder import (
    RunFolderError,
    evaluation_name,
    place_evaluation,
    place_run,
    read_checkpoint,
    trained_run,
)
from pricer.cli.short_help import FullHelp
from pricer.cli.trainer import (
    LoggedConfig,
    PricerTrainer,
    check_evaluation_name,
    check_predict_source,
    check_trainer_options,
)
from pricer.data.module import PriceDataModule
from pricer.library_internals import subcommand_parser, wandb_started
from pricer.options import OptionError
from pricer.read.number_tokens import check_price_range
from pricer.read.report import PriceReport
from pricer.train import stopping
from pricer.train.end_of_fit import end_of_fit_callbacks
from pricer.train.model import PriceModel
from pricer.train.options import check_groups


def check_adapter(adapter: str, base_model: str, subcommand: str) -> None:
    """Before the command says or makes anything: the adapter is here and is what it claims
    (peft's files, LoRA shapes that fit the base, its recipe and the files the recipe hashes)."""
    from pricer.base.load import check_adapter_files
    from pricer.hub_calls import adapter_folder
    from pricer.read.adapter_files import check_hashes
    from pricer.read.recipe import adapter_recipe, read_recipe

    check_model_name(adapter, "model.adapter")
    folder = adapter_folder(adapter)
    check_adapter_files(folder, "model.adapter", base_model)
    if subcommand in ("validate", "test", "predict"):
        check_hashes(folder, adapter_recipe(folder).files)  # read as its run measured it, or not at all
    else:
        read_recipe(folder)


def given_on_the_command_line(args: list[str], section: str) -> set[str]:
    """The `--section.name` options a person typed (a config file's values are not among them)."""
    prefix = f"--{section}."
    return {a[len(prefix) :].split("=")[0] for a in args if a.startswith(prefix)}


def resolved_config(config):
    """The subcommand's config with what is decided at run time filled in, as it will run."""
    from pricer.cli.run_folder import wandb_offline

    shown = config.clone()
    trainer = shown.trainer
    if trainer.get("precision") is None:
        trainer.precision = default_precision(trainer.get("accelerator"))
    loggers = trainer.get("logger")
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        if hasattr(logger, "class_path") and logger.class_path.endswith("WandbLogger"):
            logger.init_args.offline = bool(logger.init_args.get("offline")) or wandb_offline()[0]
    return shown


class PricerCLI(LightningCLI):
    def __init__(self, *args, **kwargs) -> None:
        given = kwargs.get("args")
        self.typed = [str(a) for a in (sys.argv[1:] if given is None else given)]
        check_config_files(self.typed)
        super().__init__(*args, **kwargs)

    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        """`--print_config` prints what the command would run: the precision the machine gets,
        W&B online or offline as it would start, the schedule the model builds."""
        flags = [a for a in self.typed if a == "--print_config" or a.startswith("--print_config=")]
        if not flags or not isinstance(args, list | type(None)):
            super().parse_arguments(parser, args)
            subcommand = self.config.get("subcommand")
            if subcommand is not None:
                check_groups(self.config[subcommand].get("model"))
            return
        given = [str(a) for a in (sys.argv[1:] if args is None else args)]
        self.config = parser.parse_args([a for a in given if a not in flags])
        subcommand = self.config.get("subcommand")
        if subcommand is None:
            return super().parse_arguments(parser, args)
        config = self.config[subcommand]
        check_groups(config.get("model"))
        shown = resolved_config(config)
        skip_none = "skip_null" in flags[0]
        sub_parser = subcommand_parser(parser, subcommand)
        print(sub_parser.dump(shown, skip_none=skip_none, skip_link_targets=False), end="")
        raise SystemExit(0)

    def _parse_ckpt_path(self) -> None:
        """Lightning's step that reads a checkpoint's model settings over the config's, before
        anything else (the checkpoint holds the option groups as the config writes them).
        The file is checked first (one line when it is not a checkpoint, and never unpickled),
        and a model option typed on the command line that the checkpoint's settings would
        silently replace is refused."""
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if not ckpt_path or ckpt_path in ("last", "best"):
            return
        trained = read_checkpoint(ckpt_path).get("hyper_parameters", {})
        model = self.config[subcommand].model
        for option in sorted(given_on_the_command_line(self.typed, "model")):
            group, _, name = option.partition(".")
            value = trained.get(group, {}).get(name) if name else trained.get(group)
            if value is not None and option in model and model[option] != value:
                raise OptionError(
                    f"--model.{option} {model[option]}: the checkpoint {ckpt_path} was trained "
                    f"with {option} {value}, which it is read with; drop the option "
                    "(or read its run's adapter with --model.adapter)"
                )
        known = set(inspect.signature(PriceModel).parameters)
        settings = {k: v for k, v in trained.items() if k in known}
        if settings:
            self.config = self.parser.parse_object({subcommand: {"model": settings}}, self.config)

    def init_parser(self, **kwargs) -> LightningArgumentParser:
        parser = super().init_parser(**kwargs)
        parser.typed = self.typed
        return parser

    def instantiate_trainer(self, **kwargs) -> L.Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        # progress as lines where there is no terminal for a bar, the report of every read
        # (unless the config has its own), and a stop at the next batch after a SIGTERM
        for kind in (ProgressLog, PriceReport, stopping.StopAtNextBatch):
            if not any(isinstance(c, kind) for c in trainer.callbacks):
                trainer.callbacks.append(kind())
        if self.subcommand == "fit":
            # every fit ends with an adapter: what it decides at its end (a config may list one)
            trainer.callbacks.extend(end_of_fit_callbacks(trainer.callbacks))
        return trainer

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # The base model is named once; the tokenizer of the token rules follows it.
        parser.link_arguments("model.base_model", "data.tokenizer")
        parser.add_argument(
            "--evaluation",
            type=str | None,
            default=None,
            help=(
                "test: the report's folder in <run>/evaluations/. Default: the data source's name "
                "and the split; the fit's own report is never replaced."
            ),
        )
        parser.add_argument(
            "--help_all",
            "--help_trainer",
            action=FullHelp,
            help="Every option in full, the Trainer's too.",
        )
        parser.add_argument(
            "--skip_test",
            type=bool,
            default=False,
            help="fit: end without reading the test split.",
        )
        parser.add_argument(
            "--run_name",
            type=str | None,
            default=None,
            help="The run folder's name. Under trainer.default_root_dir; default: a timestamp.",
        )

    def before_instantiate_classes(self) -> None:
        # What the command says of its run (its folder, W&B, the recipe's settings) waits until
        # the classes have checked their own options: a refused option is the only line.
        self._said = io.StringIO()
        with contextlib.redirect_stdout(self._said):
            self._place_the_run()

    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        said = getattr(self, "_said", None)
        if said is not None:
            sys.stdout.write(said.getvalue())

    def _place_the_run(self) -> None:
        if self.subcommand in (None, "curate"):
            return
        if self.subcommand == "deploy" and self.config.deploy.get("run_name") is None:
            raise RunFolderError("deploy: name the trained run to deploy with --run_name")
        config = self.config[self.subcommand]
        check_trainer_options(config.trainer)
        check_evaluation_name(config.get("evaluation"), self.subcommand)
        if config.model.get("adapter"):
            check_adapter(config.model.adapter, config.model.base_model, self.subcommand)
        if self.subcommand in ("validate", "test", "predict"):
            self._read_as_the_recipe_says(config.model, config.trainer)
        self.run_dir, ckpt_path = place_run(
            config, config.get("run_name"), config.get("ckpt_path"), self.subcommand
        )
        stopping.context.update(
            subcommand=self.subcommand, run_dir=self.run_dir, created=not self.run_dir.exists()
        )
        if "ckpt_path" in config:
            config.ckpt_path = ckpt_path
        if "weights_only" in config and config.weights_only is None:
            config.weights_only = True  # tensors and plain types only: a checkpoint never runs code
        if self.subcommand == "test" and trained_run(self.run_dir):
            name = config.get("evaluation") or evaluation_name(config.data.source)
            folder = place_evaluation(config, self.run_dir, name)
            again = (
                " (replacing the earlier evaluation of that name)"
                if (folder / "metrics.json").is_file()
                else ""
            )
            print(f"test report: {folder}{again}; the fit's own report in {self.run_dir} stays as it is")
        if config.trainer.precision is None:
            config.trainer.precision = default_precision(config.trainer.accelerator)
        warning = emulated_bf16_warning(config.trainer.precision, config.trainer.accelerator)
        if warning:
            print(f"pricer: warning: {warning}", file=sys.stderr)
        print(f"run folder: {self.run_dir} (precision {config.trainer.precision})")

    def _finish_loggers(self) -> None:
        # One command, one W&B run: finish it so the offline files are complete when we return.
        for logger in self.trainer.loggers:
            if isinstance(logger, WandbLogger) and wandb_started(logger):
                logger.experiment.finish()

    def _publishers(self) -> list:
        from pricer.hub.publish import HubPublisher

        return [c for c in self.trainer.callbacks if isinstance(c, HubPublisher)]

    def _read_as_the_recipe_says(self, model, trainer) -> None:
        """An adapter with a pricer.json is read as its run measured it: the recipe's base
        quantization, read-out and precision replace the config file's, unless typed on the
        command line."""
        from pricer.hub_calls import adapter_folder
        from pricer.read.recipe import read_recipe

        if not model.get("adapter"):
            return
        recipe = read_recipe(adapter_folder(model.adapter))  # checked by `check_adapter`
        typed = given_on_the_command_line(self.typed, "model")
        keys = recipe.model_options()  # read.beam, ...
        taken = {k: v for k, v in keys.items() if k not in typed and model.get(k) != v}
        for option, value in taken.items():
            model[option] = value
        current = trainer.get("precision") or default_precision(trainer.get("accelerator"))
        if (
            "precision" not in given_on_the_command_line(self.typed, "trainer")
            and current != recipe.precision
        ):
            trainer.precision = recipe.precision
            taken["trainer.precision"] = recipe.precision
        if taken:
            shown = ", ".join(f"{o}={v!r}" for o, v in taken.items())
            print(f"model.adapter {model.adapter}: read as its pricer.json says: {shown}")

    def _check_models(self) -> None:
        """After the options' own checks, before any curation or loading: the base is here and
        is what it claims (a GGUF file's magic), and its tokenizer writes every price."""
        check_model_name(self.model.hparams.base_model, "model.base_model")
        check_price_range(self.datamodule.tokenizer, self.datamodule.rules.max_price)

    def before_fit(self) -> None:
        from pricer.base.load import check_target_modules

        self._check_models()
        if not self.model.hparams.adapter:
            check_target_modules(self.model.hparams.base_model, self.model.lora_target_modules)
        for publisher in self._publishers():
            publisher.check_before_work()

    def _read_as_trained(self, serve: bool = True) -> None:
        """validate, test and predict: the models checked, the adapter's prompts (its rules and
        neighbours) and, with `serve`, the read-out its run chose."""
        self._check_models()
        config = self.config[self.subcommand]
        typed = given_on_the_command_line(self.typed, "data")
        retrieve_as_the_adapter_did(self.subcommand, config, self.model, self.datamodule, self.run_dir, typed)
        if serve:
            serve_the_runs_read_out(self.subcommand, config, self.model, self.run_dir)

    def before_validate(self) -> None:
        self._read_as_trained(serve=False)

    def before_test(self) -> None:
        self._read_as_trained()

    def before_curate(self) -> None:
        check_model_name(self.model.hparams.base_model, "model.base_model", weights=False)  # its tokenizer

    def before_deploy(self) -> None:
        self._check_models()

    def before_predict(self) -> None:
        self._read_as_trained()
        if self.datamodule.predict_source is not None:
            check_predict_source(self.datamodule.predict_source)
        # every line of a JSONL predict source is checked before a run folder or W&B run exists
        self.datamodule.products()

    def _push(self) -> None:
        """The pushes, last: whatever fails is reported at the very end, and the exit code says so."""
        if self.trainer.is_global_zero:
            for publisher in self._publishers():
                publisher.push(self.trainer)

    def after_fit(self) -> None:
        stopping.stop_here(self.trainer)  # a SIGTERM at fit's very end: no test, no push
        # As the course did: train, then measure on the test split, in the same run folder.
        if self.trainer.world_size > 1:
            # A distributed sampler pads and shards the test split; measure on one device.
            print(
                f"test: run `python -m pricer test --model.adapter {self.run_dir / 'adapter'}` on one device"
            )
        elif self.config[self.subcommand].get("skip_test"):
            print(
                "test: skipped (--skip_test): the test split stays unread; read it once, after every "
                f"choice, with `python -m pricer test --model.adapter {self.run_dir / 'adapter'}`"
            )
        elif "test" in self.datamodule.datasets:
            self.trainer.test(self.model, datamodule=self.datamodule)
            stopping.stop_here(self.trainer)
            self._record_metrics_beside_the_adapter()
        self._finish_loggers()
        stopping.stop_here()
        self._push()

    def _record_metrics_beside_the_adapter(self) -> None:
        """fit's own test report, headline numbers, in the adapter's recipe."""
        from pricer.read.recipe import read_recipe

        adapter, metrics = self.run_dir / "adapter", self.run_dir / "metrics.json"
        recipe = read_recipe(adapter) if self.trainer.is_global_zero else None
        if recipe is not None and metrics.is_file():
            recipe.with_metrics(json.loads(metrics.read_text())).save(adapter)

    def after_test(self) -> None:
        self._finish_loggers()
        self._push()

    def after_validate(self) -> None:
        self._finish_loggers()

    def after_predict(self) -> None:
        self._finish_loggers()

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {
            **LightningCLI.subcommands(),
            "curate": {"model", "datamodule"},
            "deploy": {"model", "datamodule"},
        }


def build_cli(args: list[str] | None = None, run: bool = True) -> PricerCLI:
    """The CLI as `python -m pricer` builds it (tests parse configs through this same call)."""
    return PricerCLI(
        PriceModel,
        PriceDataModule,
        parser_kwargs={
            "prog": "pricer",
            "description": "pricer: fine-tune a 4-bit LoRA LLM to predict a product's price from its text.",
        },
        trainer_class=PricerTrainer,
        parser_class=PricerParser,
        save_config_callback=LoggedConfig,
        seed_everything_default=42,
        # the model builds its own optimizer and cosine schedule (model.optimizer.learning_rate,
        # model.optimizer.warmup_ratio): no --optimizer / --lr_scheduler that would print as null
        auto_configure_optimizers=False,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )
