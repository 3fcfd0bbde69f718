"""Every private part of another library that pricer reaches, each in one function that says
what it is for, so that a library upgrade that moves one breaks here, and in
`tests/test_library_internals.py`, rather than in the middle of a run. (Beside these, the CLI
overrides LightningCLI's `_parse_ckpt_path` step, and the short help subclasses argparse's
formatter, its documented extension point; both are tested there too.) Imports nothing from
pricer; each library is imported where a function needs it.
"""

from __future__ import annotations

# Lightning


def rebuild_fit_loaders(trainer) -> None:
    """Have the fit loop make its data loaders again, at the data module's new batch size."""
    trainer.fit_loop._combined_loader = None


def resume_loader_place(trainer) -> None:
    """A resumed fit's data loader put at the saved place in its epoch, and the epoch's iterator
    made again: Lightning applies the place in `setup_data()`, which `configure_optimizers`
    already ran (through `estimated_stepping_batches`) before the checkpoint was read."""
    loop = trainer.fit_loop
    if loop.restarting and loop._combined_loader_states_to_load:
        loop._load_combined_loader_states()
        iter(loop._data_fetcher)


def wandb_started(logger) -> bool:
    """Whether a WandbLogger has started its run (asking `logger.experiment` would start one)."""
    return logger._experiment is not None


# torch


def forget_scaler_step(scaler) -> None:
    """Forget a GradScaler's record of an optimizer step that did not finish, as its `update()`
    does after every finished one: otherwise the next `unscale_` raises "unscale_() has already
    been called"."""
    from collections import defaultdict

    from torch.amp.grad_scaler import _refresh_per_optimizer_state

    scaler._per_optimizer_states = defaultdict(_refresh_per_optimizer_state)


# jsonargparse and argparse


def subcommand_parser(parser, subcommand: str):
    """The parser of one subcommand (`fit`) of a parser with subcommands."""
    return parser._subcommands_action._name_parser_map[subcommand]


def parser_actions(parser) -> list:
    """Every option a parser knows, flattened (`model.lora.r`, ...)."""
    return list(parser._actions)


def action_groups(parser) -> list:
    """A parser's option groups, in the order its help shows them."""
    return list(parser._action_groups)


def group_actions(group) -> list:
    """The options of one group."""
    return list(group._group_actions)


def formatter_class(parser) -> type:
    """The help formatter class a parser uses."""
    return type(parser._get_formatter())


def option_type(action):
    """The type jsonargparse checks an option's values against (None when it keeps none)."""
    return getattr(action, "_typehint", None)
