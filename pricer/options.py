"""The error for an option given a value pricer cannot use: one `pricer: error:` line that
names the option, the value and what to do instead, never a traceback."""

from __future__ import annotations


class OptionError(ValueError):
    """An option pricer does not take as given; the message names it and what to set instead."""
