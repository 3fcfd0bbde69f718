"""What every stage's options share: the error for an option given a value pricer cannot use
(one `pricer: error:` line that names the option, the value and what to do instead, never a
traceback), and the range types the option groups use beyond jsonargparse's own."""

from __future__ import annotations

from jsonargparse.typing import restricted_number_type

# [0, 1): a dropout, a warmup share, a probability mass
Fraction = restricted_number_type("Fraction", float, [(">=", 0), ("<", 1)], docstring="a number in [0, 1)")


class OptionError(ValueError):
    """An option pricer does not take as given; the message names it and what to set instead."""
