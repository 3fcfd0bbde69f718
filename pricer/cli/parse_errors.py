"""A bad option in one short message: the key, where it came from, and the closest valid name.

jsonargparse's own message prints the whole usage (about 85 lines for `fit`) before naming the
key, and a misspelt category prints the 33 names twice; the message here is what a person
needs to fix it. jsonargparse raises its errors as text only (an `ArgumentError` with no key
or value attached), so the key is the one thing read from its message, by the four patterns
below. Everything else comes from the parser and the input themselves: the value given and
where (the command line or the last config file holding the key), the choices (the `Literal`s
of the option's type), the nearest valid name (difflib). A message none of the patterns match
is shown as jsonargparse wrote it, less the usage.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from pathlib import Path
from typing import Any, Literal, NoReturn, get_args, get_origin

import yaml
from lightning.pytorch.cli import LightningArgumentParser

from pricer.cli.config_files import config_files
from pricer.cli.short_help import prog_name, short_help
from pricer.library_internals import option_type, parser_actions
from pricer.train.options import GROUPS, scalar_for_group

UNKNOWN = re.compile(r"does not accept (?:nested )?(?:option|key)s? '([^']+)'")  # a config's key
UNRECOGNIZED = re.compile(r"unrecognized arguments: (.*)")  # argparse's, for the command line
PARSER_KEY = re.compile(r'Parser key "([^"]+)"')  # a value the key's type refused
LINKED = re.compile(r"(\S+) --> (\S+): ")  # a value given to an option another one sets
MISSING = object()


def _lookup(node: Any, key: str) -> Any:
    for part in key.split("."):
        if isinstance(node, dict) and isinstance(node.get("init_args"), dict) and part not in node:
            node = node["init_args"]  # a class given as class_path and init_args
        if not isinstance(node, dict) or part not in node:
            return MISSING
        node = node[part]
    return node


def given(key: str, args: list[str]) -> tuple[str, Any]:
    """Where a key was given and its value: the command line, else the last config file
    holding it (`""` and MISSING when neither does, as for a key set in a nested file)."""
    for i, arg in enumerate(args):
        if arg == f"--{key}":
            return "on the command line", args[i + 1] if i + 1 < len(args) else MISSING
        if arg.startswith(f"--{key}="):
            return "on the command line", arg.split("=", 1)[1]
    for name in reversed(config_files(args)):
        try:
            value = _lookup(yaml.safe_load(Path(name).read_text()), key)
        except (OSError, yaml.YAMLError):
            continue
        if value is not MISSING:
            return f"in {name}", value
    return "", MISSING


def option_names(parser) -> list[str]:
    return [a.dest for a in parser_actions(parser) if a.dest and a.dest != "help"]


def closest(word: str, choices: list[str]) -> str | None:
    found = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if not found:  # a key under the right section with the wrong leaf: compare the leaves
        section, _, leaf = word.rpartition(".")
        same = [c.rpartition(".")[2] for c in choices if c.rpartition(".")[0] == section]
        found = [f"{section}.{m}" if section else m for m in difflib.get_close_matches(leaf, same, n=1)]
    return found[0] if found else None


def choices_of(typehint: Any) -> list[str]:
    """Every `Literal` value an option's type allows, through unions and lists."""
    if get_origin(typehint) is Literal:
        return [str(value) for value in get_args(typehint)]
    return list(dict.fromkeys(c for arg in get_args(typehint) for c in choices_of(arg)))


def _unknown(key: str, place: str, parser) -> str:
    at = f" {place}" if place else ""
    near = closest(key, option_names(parser))
    return f"unknown option {key}{at}" + (f"; did you mean {near}?" if near else "")


def _unrecognized(words: str, parser) -> str:
    parts = []
    for option in [w for w in words.split() if w.startswith("--")] or [words]:
        key = option.removeprefix("--").split("=")[0]
        near = closest(key, option_names(parser))
        parts.append(option + (f" (did you mean --{near}?)" if near else ""))
    return f"unknown option on the command line: {', '.join(parts)}"


def _refused(key: str, message: str, args: list[str], parser) -> str:
    place, value = given(key, args)
    shown = f"{key}{' ' + place if place else ''}: "
    if key.removeprefix("model.") in GROUPS and value is not MISSING and not isinstance(value, dict):
        return shown + scalar_for_group(key, value)
    action = next((a for a in parser_actions(parser) if a.dest == key), None)
    choices = choices_of(option_type(action))
    values = value if isinstance(value, list) else [value]
    wrong = [v for v in values if v is not MISSING and str(v) not in choices]
    if choices and wrong:
        named = []
        for v in wrong:
            near = difflib.get_close_matches(str(v), choices, n=1, cutoff=0.5)
            named.append(f"{str(v)!r}" + (f" (did you mean {near[0]!r}?)" if near else ""))
        listed = (
            f"choose from {', '.join(choices)}"
            if len(choices) <= 12
            else f"the {len(choices)} choices are listed by `{prog_name(parser)} --help_all`"
        )
        return shown + f"not a valid choice: {', '.join(named)}; {listed}"
    # jsonargparse's reason: its first "- " line, or the line after the key
    lines = [line.strip() for line in message.strip().splitlines()[1:] if line.strip()]
    reason = next((line[2:] for line in lines if line.startswith("- ")), lines[0] if lines else message)
    if value is not MISSING and str(value) not in reason:
        reason += f" (given: {str(value)[:200]})"
    return shown + reason


def short_message(message: str, args: list[str], parser) -> str:
    """One line for jsonargparse's message; the message as it is when no pattern matches."""
    if unknown := UNKNOWN.search(message):
        return _unknown(unknown.group(1), given(unknown.group(1), args)[0], parser)
    if unrecognized := UNRECOGNIZED.search(message):
        return _unrecognized(unrecognized.group(1), parser)
    if (linked := LINKED.search(message)) and given(linked.group(2), args)[1] is not MISSING:
        source, target = linked.groups()
        return (
            f"{target} {given(target, args)[0]}: it is not set on its own, it follows {source}; "
            f"give --{source} instead"
        )
    if parser_key := PARSER_KEY.search(message):
        return _refused(parser_key.group(1), message, args, parser)
    return message


class PricerParser(LightningArgumentParser):
    """Lightning's parser, with pricer's short error messages (jsonargparse's whole message
    with JSONARGPARSE_DEBUG=true) and its short `--help`."""

    typed: list[str] | None = None  # the command's arguments, to say where a bad key came from

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error or os.environ.get("JSONARGPARSE_DEBUG", "").lower() == "true":
            super().error(message, ex)
        parser = getattr(ex, "subcommand_parser", None) or self
        prog = prog_name(parser)
        args = self.typed if self.typed is not None else sys.argv[1:]
        sys.stderr.write(f"{prog}: error: {short_message(message, args, parser)}\n")
        sys.stderr.write(f"({prog} --help lists the options)\n")
        self.exit(2)

    def format_help(self) -> str:
        return short_help(self) or super().format_help()
