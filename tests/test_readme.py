"""README's commands stay true: CI runs README's test command, word for word."""

import re

from tests.conftest import REPO


def fenced_after(heading: str) -> str:
    text = (REPO / "README.md").read_text()
    section = text.split(heading, 1)[1]
    return re.search(r"```bash\n(.*?)\n```", section, re.S).group(1).strip()


def test_ci_runs_the_readme_test_command():
    command = fenced_after("## Run the tests")
    ci = (REPO / ".ci" / "run").read_text()
    assert f"TEST_COMMAND='{command}'" in ci


def test_readme_names_the_configs_that_exist():
    text = (REPO / "README.md").read_text()
    for name in re.findall(r"configs/(\w+\.yaml)", text):
        assert (REPO / "configs" / name).is_file(), name
