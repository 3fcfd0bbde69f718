"""An installed, non-editable pricer finds its card templates, configs and Space app inside the wheel."""

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
        "import pricer.hub.cards as c; "
        "print(c.template('dataset_card.md')); print(c.template('model_card.md')); print(c.__file__); "
        "import pricer.hub.space as s; print(s.app_folder()); "
        f"print(s.stage_space(__import__('pathlib').Path({str(tmp_path / 'space')!r}), s.SpaceSettings('me/base')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(site)},
    ).stdout.split()
    assert all(line.startswith(str(site)) for line in out[:-1]), out
    assert (site / "pricer" / "configs" / "smoke.yaml").is_file()
    assert out[-2] == str(site / "pricer" / "space_app")
    staged = tmp_path / "space"
    assert (staged / "app.py").read_bytes() == (REPO / "space" / "app.py").read_bytes()
    # the Space gets the package's modules, not the folders the wheel adds inside it
    copied = sorted(str(p.relative_to(staged)) for p in (staged / "pricer").rglob("*") if p.is_file())
    assert copied == sorted(str(p.relative_to(REPO)) for p in (REPO / "pricer").rglob("*.py"))
    assert "pricer/read/serving.py" in copied
