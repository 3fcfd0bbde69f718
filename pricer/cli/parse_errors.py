"""A bad option in one short message: the key, where it came from, and the closest valid name.

jsonargparse's own message prints the whole usage (about 85 lines for `fit`) before naming the
key, and a misspelt category prints the 33 names twice; the message here is what a person
needs to fix it.
"""

from __future__ import annotations

import argparse
import copy
import difflib
import os
import re
import sys
from pathlib import Path
from typing import NoReturn

import yaml
from lightning.pytorch.cli import LightningArgumentParser

from pricer.train.options import GROUPS, moved_key, scalar_for_group

UNKNOWN = re.compile(r"does not accept (?:nested )?(?:option|key)s? '([^']+)'")
PARSER_KEY = re.compile(r'Parser key "([^"]+)"')
LITERAL = re.compile(r"Literal\[([^\]]*)\]")
GIVEN = re.compile(r"(?:Given|Got) value: (.*)")
UNRECOGNIZED = re.compile(r"unrecognized arguments: (.*)")
LOAD_FAILED = re.compile(r'Unable to load config "([^"]*)"')


def config_files(args: list[str]) -> list[str]:
    """The files named with --config / -c, in order."""
    files = []
    for i, arg in enumerate(args):
        if arg in ("--config", "-c") and i + 1 < len(args):
            files.append(args[i + 1])
        elif arg.startswith("--config="):
            files.append(arg.split("=", 1)[1])
    return files


def _holds(path: str, key: str) -> bool:
    try:
        node = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return False
    for part in key.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, dict) and isinstance(node.get("init_args"), dict) and part in node["init_args"]:
            node = node["init_args"][part]
        else:
            return False
    return True


def where(key: str, args: list[str]) -> str:
    """Where a key was given: the command line, or the last config file that holds it."""
    if any(a == f"--{key}" or a.startswith(f"--{key}=") for a in args):
        return "on the command line"
    holding = [f for f in config_files(args) if _holds(f, key)]
    return f"in {holding[-1]}" if holding else ""


def option_names(parser) -> list[str]:
    return [a.dest for a in parser._actions if a.dest and a.dest != "help"]


def closest(word: str, choices: list[str]) -> str | None:
    found = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if not found:  # a key under the right section with the wrong leaf: compare the leaves
        leaf = word.rsplit(".", 1)[-1]
        section = word.rsplit(".", 1)[0] if "." in word else ""
        same = [c for c in choices if c.rsplit(".", 1)[0] == section]
        found = [
            f"{section}.{m}" if section else m
            for m in difflib.get_close_matches(leaf, [c.rsplit(".", 1)[-1] for c in same], n=1)
        ]
    return found[0] if found else None


def short_message(message: str, args: list[str], parser) -> str:
    """One or two lines for jsonargparse's message; the message as it is when not recognised."""
    unknown = UNKNOWN.search(message)
    if unknown:
        key = unknown.group(1)
        near = closest(key, option_names(parser))
        place = where(key, args)
        if moved_key(key):
            return f"{key}{' ' + place if place else ''} is now {moved_key(key)} (the options are grouped)"
        hint = f"; did you mean {near}?" if near else ""
        return f"unknown option {key}{' ' + place if place else ''}{hint}"
    unrecognized = UNRECOGNIZED.search(message)
    if unrecognized:
        options = [w for w in unrecognized.group(1).split() if w.startswith("--")]
        names = option_names(parser)
        parts = []
        for option in options or [unrecognized.group(1)]:
            key = option.removeprefix("--").split("=")[0]
            if moved_key(key):
                parts.append(f"{option} (now --{moved_key(key)}: the options are grouped)")
                continue
            near = closest(key, names)
            parts.append(f"{option}" + (f" (did you mean --{near}?)" if near else ""))
        return f"unknown option on the command line: {', '.join(parts)}"
    parser_key = PARSER_KEY.search(message)
    if parser_key:
        key = parser_key.group(1)
        place = where(key, args)
        loaded = LOAD_FAILED.search(message)
        if loaded and key.removeprefix("model.") in GROUPS:
            return f"{key}{' ' + place if place else ''}: {scalar_for_group(key, loaded.group(1))}"
        given = GIVEN.search(message)
        literals = LITERAL.findall(message)
        if literals and given:
            # every Literal of a union (trainer.precision has three), quoted or not
            named = (c.strip().strip("'") for group in literals for c in group.split(",") if c.strip())
            choices = list(dict.fromkeys(named))
            values = re.findall(r"'([^']*)'", given.group(1)) or [given.group(1).strip()]
            wrong = [v for v in values if v not in choices]
            if wrong:
                parts = []
                for value in wrong:
                    near = difflib.get_close_matches(value, choices, n=1, cutoff=0.5)
                    parts.append(f"{value!r}" + (f" (did you mean {near[0]!r}?)" if near else ""))
                listed = (
                    f"choose from {', '.join(choices)}"
                    if len(choices) <= 12
                    else f"the {len(choices)} choices are listed by `{_prog(parser)} --help_all`"
                )
                return (
                    f"{key}{' ' + place if place else ''}: not a valid choice: {', '.join(parts)}; {listed}"
                )
        first = message.strip().splitlines()
        detail = [line.strip() for line in first[1:] if line.strip().startswith("- ")][:1]
        shown = f"{key}{' ' + place if place else ''}: " + (
            detail[0][2:] if detail else " ".join(first[1:2]).strip()
        )
        if given:
            shown += f" (given: {given.group(1)[:200]})"
        return shown
    return message


def _prog(parser) -> str:
    return parser.prog.replace(" [options]", "")


class PricerParser(LightningArgumentParser):
    """Lightning's parser, with pricer's short error messages (jsonargparse's whole message
    with JSONARGPARSE_DEBUG=true)."""

    typed: list[str] | None = None  # the command's arguments, to say where a bad key came from

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error or os.environ.get("JSONARGPARSE_DEBUG", "").lower() == "true":
            super().error(message, ex)
        parser = getattr(ex, "subcommand_parser", None) or self
        prog = _prog(parser)
        args = self.typed if self.typed is not None else sys.argv[1:]
        sys.stderr.write(f"{prog}: error: {short_message(message, args, parser)}\n")
        sys.stderr.write(f"({prog} --help lists the options)\n")
        self.exit(2)

    def format_help(self) -> str:
        return short_help(self) or super().format_help()


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
    return any(a.dest == "trainer" for a in group._group_actions)


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
    "config": "A config file (YAML); several are merged in order.",
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
    base = type(parser._get_formatter())

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

    return Compact(_prog(parser), max_help_position=34)


def short_help(parser) -> str | None:
    """A subcommand's help: pricer's options, one sentence each, and a pointer to the rest (the
    full descriptions and the Trainer's ~90 options, `--help_all`); None for a parser without a
    Trainer (the top level)."""
    groups = parser._action_groups
    trainer = [g for g in groups if _is_trainer(g)]
    if not trainer or getattr(parser, "full_help", False):
        return None
    prog = _prog(parser)
    formatter = _compact_formatter(parser)
    formatter.add_usage(
        f"{prog} [-h] [-c CONFIG] [--print_config[=flags]] [--model.* VALUE] [--data.* VALUE] "
        "[--trainer.* VALUE] ...",
        [],
        [],
        prefix="usage: ",
    )
    formatter.add_text(parser.description)
    rest = [g for g in groups if g not in trainer and g._group_actions]
    order = sorted(rest, key=lambda g: 0 if g.title == "options" else 1)
    for group in order:
        shown = [
            _compact(a)
            for a in group._group_actions
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
        for a in trainer[0]._group_actions
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
