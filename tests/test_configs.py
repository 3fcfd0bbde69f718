"""Every config in configs/ parses through the real LightningCLI, offline and instantly."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pricer.cli.commands import build_cli
from pricer.data.module import PriceDataModule
from pricer.train.model import PriceModel

CONFIGS = sorted((Path(__file__).resolve().parent.parent / "configs").glob("*.yaml"))


def test_there_are_configs():
    assert {p.name for p in CONFIGS} >= {"appliances.yaml", "smoke.yaml"}


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_config_parses_and_builds_nothing_heavy(config):
    cli = build_cli(["--config", str(config)], run=False)
    assert isinstance(cli.model, PriceModel) and cli.model.model is None  # built in configure_model
    assert isinstance(cli.datamodule, PriceDataModule)
    # the tokenizer of the token rules follows the base model
    assert cli.datamodule.tokenizer_name == cli.model.hparams.base_model


def test_appliances_trains_as_the_course_peer_does():
    """The real job is the course's: its LoRA and optimizer settings are those the course's
    recipe runs with beside pricer (benchmarks/course_recipe.py, from the course's notebook)."""
    from benchmarks.course_recipe import COURSE

    cli = build_cli(["--config", str(CONFIGS[0].parent / "appliances.yaml")], run=False)
    hp = cli.model.hparams
    assert hp.base_model == "meta-llama/Llama-3.1-8B" and hp.quantization["weights"] == "4bit"
    assert (hp.lora["r"], hp.lora["alpha"], hp.lora["dropout"]) == tuple(
        COURSE[k] for k in ("lora_r", "lora_alpha", "lora_dropout")
    )
    assert set(cli.model.lora_target_modules) == set(COURSE["target_modules"])
    opt = hp.optimizer
    trained = (
        opt["learning_rate"],
        opt["weight_decay"],
        opt["warmup_ratio"],
        opt["max_grad_norm"],
        cli.trainer.max_epochs,
    )
    assert trained == tuple(
        COURSE[k]
        for k in ("learning_rate", "weight_decay", "warmup_steps", "max_grad_norm", "num_train_epochs")
    )


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_every_command_reports_and_fit_decides_its_end_though_no_config_lists_them(
    config, tmp_path, monkeypatch
):
    from pricer.cli.commands import PricerCLI
    from pricer.read.report import PriceReport
    from pricer.train import end_of_fit

    listed = {c["class_path"] for c in yaml.safe_load(config.read_text())["trainer"].get("callbacks", [])}
    added = (PriceReport, end_of_fit.BestWeights, end_of_fit.ChooseBlend, end_of_fit.SaveAdapter)
    assert not listed & {f"{kind.__module__}.{kind.__name__}" for kind in added}
    cli = build_cli(["--config", str(config)], run=False)  # any command's trainer: the report
    assert [type(c) for c in cli.trainer.callbacks].count(PriceReport) == 1
    assert not any(isinstance(c, end_of_fit.EndOfFit) for c in cli.trainer.callbacks)

    class Built(Exception):
        pass

    def built(cli):
        raise Built([type(c) for c in cli.trainer.callbacks])

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(PricerCLI, "before_fit", built)  # fit's trainer, before anything runs
    root = ["--trainer.default_root_dir", str(tmp_path / "runs"), "--trainer.logger", "false"]
    with pytest.raises(Built) as fit:
        build_cli(["fit", "--config", str(config), *root])
    assert [fit.value.args[0].count(kind) for kind in added] == [1, 1, 1, 1]


def test_dotted_overrides_and_several_configs(tmp_path):
    extra = tmp_path / "extra.yaml"
    extra.write_text("data:\n  test_size: 7\n")
    config = CONFIGS[0].parent / "smoke.yaml"
    cli = build_cli(["--config", str(config), "--config", str(extra), "--model.lora.r", "8"], run=False)
    assert cli.datamodule.test_size == 7 and cli.model.hparams.lora["r"] == 8
    assert cli.datamodule.train_size == 300


def test_print_config_shows_the_whole_job_offline():
    config = CONFIGS[0].parent / "appliances.yaml"
    out = subprocess.run(
        [sys.executable, "-m", "pricer", "fit", "--config", str(config), "--print_config"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    for expected in (
        "base_model: meta-llama/Llama-3.1-8B",
        "train_size: 25000",
        "min_tokens: 150",
        "  lora:\n    r: 32\n",
    ):
        assert expected in out


def test_a_bad_category_is_refused_with_the_choices():
    with pytest.raises(SystemExit):
        build_cli(
            ["--config", str(CONFIGS[0].parent / "smoke.yaml"), "--data.categories", "[Softwar]"], run=False
        )


@pytest.mark.parametrize(
    "mode, offline, capability, precision",
    [
        ("offline", "true", None, "32-true"),
        ("online", "false", (7, 5), "16-mixed"),
        ("offline", "true", (8, 0), "bf16-mixed"),
    ],
    ids=["cpu", "t4", "a100"],
)
def test_print_config_shows_what_will_run(monkeypatch, capsys, mode, offline, capability, precision):
    """Not the parser's placeholders: the precision the machine gets (the config leaves it to
    pricer; the card simulated, or none), W&B as it will start, and no optimizer or scheduler
    keys the model ignores."""
    import bitsandbytes  # noqa: F401  (imported on the real CPU, before a card is simulated)
    import torch

    monkeypatch.setenv("WANDB_MODE", mode)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: capability is not None)
    if capability is not None:
        monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "a simulated card")
    config = CONFIGS[0].parent / "appliances.yaml"
    with pytest.raises(SystemExit) as stop:
        build_cli(["fit", "--config", str(config), "--print_config"])
    assert stop.value.code == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["trainer"]["precision"] == precision
    assert shown["trainer"]["logger"]["init_args"]["offline"] is (offline == "true")
    assert "lr_scheduler" not in shown and "optimizer" not in shown
    assert shown["model"]["optimizer"]["learning_rate"] == 1e-4 and shown["data"]["revision"] == "main"


def test_offline_true_in_a_config_stays_offline_with_credentials(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)  # credentials: online unless told otherwise
    told = tmp_path / "offline.yaml"
    told.write_text(
        "trainer:\n  logger:\n    class_path: lightning.pytorch.loggers.WandbLogger\n    init_args:\n      offline: true\n"
    )
    config = CONFIGS[0].parent / "appliances.yaml"
    with pytest.raises(SystemExit):
        build_cli(["fit", "--config", str(config), "--config", str(told), "--print_config"])
    assert yaml.safe_load(capsys.readouterr().out)["trainer"]["logger"]["init_args"]["offline"] is True
    from pricer.cli.run_folder import place_run

    cli = build_cli(
        ["--config", str(config), "--config", str(told), "--trainer.default_root_dir", str(tmp_path)],
        run=False,
    )
    place_run(cli.config, "r", None)
    assert cli.config.trainer.logger.init_args.offline is True
    assert "W&B: offline (offline: true in the config)" in capsys.readouterr().out
