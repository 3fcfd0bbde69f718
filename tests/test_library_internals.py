"""The private parts of other libraries pricer reaches (pricer/library_internals.py), each
checked against the installed library: an upgrade that moves one fails here."""

import argparse
import inspect

import lightning as L
import pytest
import torch
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.demos.boring_classes import BoringModel

from pricer import library_internals as internals


class Probe(L.Callback):
    """Calls each Lightning internal at the point pricer does."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def on_train_start(self, trainer, pl_module) -> None:
        internals.resume_loader_place(trainer)  # not restarting: nothing to apply
        self.seen.append("resume_loader_place")
        loader = trainer.fit_loop._combined_loader
        assert loader is not None
        internals.rebuild_fit_loaders(trainer)
        trainer.fit_loop.setup_data()  # what the fit loop does next
        assert trainer.fit_loop._combined_loader is not loader
        self.seen.append("rebuild_fit_loaders")


def test_the_fit_loop_internals(tmp_path):
    probe = Probe()
    trainer = L.Trainer(
        default_root_dir=tmp_path,
        max_steps=2,
        callbacks=[probe],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(BoringModel())
    assert probe.seen == ["resume_loader_place", "rebuild_fit_loaders"] and trainer.global_step == 2
    loop = trainer.fit_loop
    assert hasattr(loop, "_combined_loader_states_to_load") and callable(loop._load_combined_loader_states)
    assert hasattr(loop, "_data_fetcher")


def test_a_wandb_logger_says_whether_its_run_started(tmp_path):
    from lightning.pytorch.loggers import WandbLogger

    logger = WandbLogger(save_dir=str(tmp_path), offline=True)
    assert internals.wandb_started(logger) is False


def test_a_forgotten_scaler_step_lets_the_next_unscale_run():
    weight = torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.SGD([weight], lr=0.1)
    scaler = torch.amp.GradScaler("cpu")
    scaler.scale(weight.sum()).backward()
    scaler.unscale_(optimizer)  # the step then fails before scaler.update()
    with pytest.raises(RuntimeError, match="unscale_"):
        scaler.unscale_(optimizer)
    internals.forget_scaler_step(scaler)
    scaler.unscale_(optimizer)


def test_the_parser_internals():
    from jsonargparse import ArgumentParser
    from jsonargparse.typing import PositiveInt

    fit = ArgumentParser(prog="fit")
    group = fit.add_argument_group("model")
    group.add_argument("--model.r", type=PositiveInt, default=8, help="LoRA rank.")
    top = ArgumentParser(prog="pricer")
    subcommands = top.add_subcommands()
    subcommands.add_subcommand("fit", fit)
    assert internals.subcommand_parser(top, "fit") is fit
    assert "model.r" in [a.dest for a in internals.parser_actions(fit)]
    (model,) = [g for g in internals.action_groups(fit) if g.title == "model"]
    (action,) = internals.group_actions(model)
    assert action.dest == "model.r" and internals.option_type(action) is PositiveInt
    assert issubclass(internals.formatter_class(fit), argparse.HelpFormatter)


def test_the_overridden_and_subclassed_hooks_are_still_there():
    """pricer's CLI overrides LightningCLI's checkpoint step, and its short help subclasses
    argparse's formatter: both hooks must still be the library's."""
    assert "self._parse_ckpt_path()" in inspect.getsource(LightningCLI)
    formatter = argparse.HelpFormatter("prog")
    assert callable(formatter._get_help_string) and callable(formatter._format_action_invocation)
