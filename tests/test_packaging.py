"""The torch floor in pyproject.toml is the oldest torch the installed stack runs on, no newer:
a T4 notebook's torch is kept when pricer installs."""

import re
from importlib.metadata import requires

import tomllib
from packaging.requirements import Requirement
from packaging.version import Version

from tests.conftest import REPO


def torch_floor(requirements: list[str], extra: str | None = None) -> Version | None:
    floors = []
    for text in requirements:
        requirement = Requirement(text)
        if requirement.name != "torch":
            continue
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": extra or ""}):
            continue
        floors += [Version(s.version) for s in requirement.specifier if s.operator in (">=", "==", "~=")]
    return max(floors, default=None)


def test_the_torch_floor_is_the_highest_floor_of_the_stack():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    ours = torch_floor(project["dependencies"])
    stack = {
        "lightning": torch_floor(requires("lightning")),
        "bitsandbytes": torch_floor(requires("bitsandbytes")),
        "peft": torch_floor(requires("peft")),
        # transformers asks for torch through its "torch" extra and disables PyTorch below it
        "transformers": torch_floor(requires("transformers"), extra="torch"),
    }
    assert all(stack.values()), stack
    assert ours == max(stack.values()), (ours, stack)
    assert not re.search(r'"torch[<>=~]=?[^"]*,', (REPO / "pyproject.toml").read_text())  # no ceiling


def test_no_test_module_imports_another():
    """What tests share lives in conftest.py; a test module importing another would also run
    (and collect) that module's fixtures and tests where they are not wanted."""
    offenders = []
    for module in sorted((REPO / "tests").glob("test_*.py")):
        for number, line in enumerate(module.read_text().splitlines(), start=1):
            if re.match(r"\s*(from tests\.test_\w+ import|import tests\.test_)", line):
                offenders.append(f"{module.name}:{number}: {line.strip()}")
    assert not offenders, offenders
