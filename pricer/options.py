"""The error for an option given a value pricer cannot use: one `pricer: error:` line that
names the option, the value and what to do instead, never a traceback."""

from __future__ import annotations


class OptionError(ValueError):
    """An option pricer does not take as given; the message names it and what to set instead."""


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
