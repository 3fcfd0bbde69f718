"""An installed, non-editable pricer finds its card templates and configs inside the wheel."""

import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_the_wheel_ships_the_card_templates(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"), str(REPO)],
        check=True,
        timeout=300,
    )
    (wheel,) = (tmp_path / "dist").glob("pricer-*.whl")
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
        check=True,
        timeout=300,
    )
    code = (
        "import pricer.cards as c; "
        "print(c.template('dataset_card.md')); print(c.template('model_card.md')); print(c.__file__)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(site)},
    ).stdout.split()
    assert all(line.startswith(str(site)) for line in out), out
    assert (site / "pricer" / "configs" / "smoke.yaml").is_file()
