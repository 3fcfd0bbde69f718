"""The command line, `python -m pricer`: the LightningCLI subclass and its subcommands, the
`--config` checks, the one-line error messages, run folders, progress lines and logs.

May import every other part of pricer; nothing in pricer imports it.
"""
