"""The `--config` files, checked before the parser reads them: each a readable YAML mapping,
or one line naming the file (jsonargparse's own messages for these are empty or name no file)."""

from __future__ import annotations

from pathlib import Path

from pricer.options import OptionError


def config_files(args: list[str]) -> list[str]:
    """The files named with --config / -c, in order."""
    files = []
    for i, arg in enumerate(args):
        if arg in ("--config", "-c") and i + 1 < len(args):
            files.append(args[i + 1])
        elif arg.startswith("--config="):
            files.append(arg.split("=", 1)[1])
    return files


def check_config_files(args: list[str]) -> None:
    """Each `--config` file is a readable YAML mapping, said in one line naming the file before
    the parser sees it (its own messages for these are empty or name no file)."""
    import yaml

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
