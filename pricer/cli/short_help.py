"""`fit --help` in one screen: pricer's options as `--name=default` and their first sentence,
grouped as a config writes them, then a pointer to `--help_all` (every option in full, with the
types and Lightning's Trainer). argparse's own formatter does the layout; this only chooses what
it shows.
"""

from __future__ import annotations

import argparse
import copy
import re

from pricer.library_internals import action_groups, formatter_class, group_actions


def prog_name(parser) -> str:
    return parser.prog.replace(" [options]", "")


# The Trainer options most runs touch: shown by name under the pointer to the rest.
COMMON_TRAINER = (
    "max_epochs",
    "max_steps",
    "accelerator",
    "devices",
    "precision",
    "default_root_dir",
    "logger",
    "callbacks",
    "val_check_interval",
    "log_every_n_steps",
)


def _is_trainer(group) -> bool:
    return any(a.dest == "trainer" for a in group_actions(group))


class FullHelp(argparse.Action):
    """`--help_all`: the help with every option described in full, the Trainer's too."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        parser.full_help = True
        parser.print_help()
        parser.exit()


SENTENCE_END = re.compile(r"(?<=[a-z0-9)`'/])\.(?=\s|$)")


def first_sentence(text: str) -> str:
    """The help's first sentence: the rest is in `--help_all` and docs/."""
    text = " ".join(text.split())
    end = SENTENCE_END.search(text)
    return text[: end.end()] if end else text


CONFIG_FILE = "Path to a configuration file."  # each section's own --model, --model.lora, ...
# Lightning's own options, in a sentence
SHORT = {
    "print_config": "Print the config the command would run, and exit.",
    "seed_everything": "The seed of every random generator.",
    "help": "This help.",
    "config": "A YAML config file; several merge in order.",
}


def _shown_default(action: argparse.Action) -> str | None:
    default = action.default
    if action.nargs == 0 or default in (None, argparse.SUPPRESS) or isinstance(default, (dict, list)):
        return None
    return str(default).lower() if isinstance(default, bool) else str(default)


def _compact(action: argparse.Action) -> argparse.Action:
    """A copy of an option for the short help: the first sentence of its description (the
    type, the choices and the rest: `--help_all`)."""
    shown = copy.copy(action)
    text = SHORT.get(action.dest) or first_sentence(str(action.help or ""))
    shown.help = text.replace("%", "%%")
    return shown


def _compact_formatter(parser) -> argparse.HelpFormatter:
    """The parser's formatter, each option as `--name=default` with its help as given."""
    base = formatter_class(parser)

    class Compact(base):
        def _get_help_string(self, action):
            return action.help

        def _format_action_invocation(self, action):
            if not action.option_strings:
                return action.dest
            longs = [o for o in action.option_strings if o.startswith("--") and not o.endswith("+")]
            name = (longs or action.option_strings)[0]
            default = _shown_default(action)
            return f"{name}={default}" if default is not None else name

    return Compact(prog_name(parser), max_help_position=34)


def short_help(parser) -> str | None:
    """A subcommand's help: pricer's options, one sentence each, and a pointer to the rest (the
    full descriptions and the Trainer's ~90 options, `--help_all`); None for a parser without a
    Trainer (the top level)."""
    groups = action_groups(parser)
    trainer = [g for g in groups if _is_trainer(g)]
    if not trainer or getattr(parser, "full_help", False):
        return None
    prog = prog_name(parser)
    formatter = _compact_formatter(parser)
    formatter.add_usage(
        f"{prog} [-h] [-c CONFIG] [--print_config[=flags]] [--model.* VALUE] [--data.* VALUE] "
        "[--trainer.* VALUE] ...",
        [],
        [],
        prefix="usage: ",
    )
    formatter.add_text(parser.description)
    rest = [g for g in groups if g not in trainer and group_actions(g)]
    order = sorted(rest, key=lambda g: 0 if g.title == "options" else 1)
    for group in order:
        shown = [
            _compact(a)
            for a in group_actions(group)
            if a.help is not argparse.SUPPRESS and not (a.help == CONFIG_FILE and a.dest != "config")
        ]
        shown = [a for a in shown if not a.help.startswith("Moved:")]
        if not shown:
            continue
        formatter.start_section(group.title)
        formatter.add_arguments(shown)
        formatter.end_section()
    names = {
        a.dest.removeprefix("trainer.")
        for a in group_actions(trainer[0])
        if a.dest.startswith("trainer.") and not a.dest.endswith(".help")
    }
    common = ", ".join(f"--trainer.{n}" for n in COMMON_TRAINER if n in names)
    formatter.start_section("The rest")
    formatter.add_text(
        f"`{prog} --help_all` describes each option in full, with the types and the {len(names)} "
        f"options of Lightning's Trainer under --trainer (pricer's configs set the ones it needs; "
        f"most runs touch {common}). The options' guide: docs/command-line.md."
    )
    formatter.end_section()
    return formatter.format_help()
