"""The error for an option given a value pricer cannot use: one `pricer: error:` line that
names the option, the value and what to do instead, never a traceback."""

from __future__ import annotations

from pathlib import Path


class OptionError(ValueError):
    """An option pricer does not take as given; the message names it and what to set instead."""


def check_config_files(args: list[str]) -> None:
    """Each `--config` file is a readable YAML mapping, said in one line naming the file before
    the parser sees it (its own messages for these are empty or name no file)."""
    import yaml

    from pricer.parse_errors import config_files

    for name in config_files(args):
        path = Path(name).expanduser()
        if not path.exists():
            raise OptionError(f"--config {name}: no such file")
        if path.is_dir():
            raise OptionError(f"--config {name}: a folder, not a YAML file")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as error:
            raise OptionError(f"--config {name}: not a text file (byte {error.start} is not UTF-8)") from None
        except OSError as error:
            raise OptionError(f"--config {name}: cannot be read ({error.strerror})") from None
        if not text.strip():
            raise OptionError(f"--config {name}: the file is empty")
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(error, "problem", None) or str(error).splitlines()[0]
            raise OptionError(f"--config {name}: not valid YAML{at}: {problem}") from None
        if loaded is None:
            raise OptionError(f"--config {name}: the file holds only comments")
        if not isinstance(loaded, dict):
            raise OptionError(
                f"--config {name}: holds a {type(loaded).__name__}, not sections (trainer:, model:, data:)"
            )


def check_range(option: str, value, low=None, high=None, low_open=False, high_open=False, null=False) -> None:
    """One option's value in its range, or one line naming it, the range and the value."""
    if value is None and null:
        return
    fine = isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
    if fine and low is not None:
        fine = value > low if low_open else value >= low
    if fine and high is not None:
        fine = value < high if high_open else value <= high
    if fine:
        return
    if low is not None and high is not None:
        wanted = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    elif low is not None:
        wanted = f"{'above' if low_open else 'at least'} {low:g}"
    else:
        wanted = f"{'below' if high_open else 'at most'} {high:g}"
    raise OptionError(f"{option} must be {wanted}{' or null' if null else ''}, got {value!r}")
