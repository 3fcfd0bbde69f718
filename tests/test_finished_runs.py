"""A finished run is never changed by what is typed next, and bad input ends in one line
before any run folder exists."""

import hashlib
import json
from pathlib import Path

import pytest
import torch

from pricer.cli.main import main
from tests.conftest import cli_args, fit_overlay, record, write_raw

PUBLISHER = (
    "    - class_path: pricer.hub.publish.HubPublisher\n"
    "      init_args: {model_repo: me/pricer-tiny, base_model_id: me/tiny-llama}\n"
)
OVERLAY = fit_overlay(PUBLISHER)


def folder_hash(folder: Path) -> dict[str, str]:
    """Every file under a folder, by relative path, with the SHA-256 of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_llama):
    root = tmp_path_factory.mktemp("finished")
    write_raw(root, "Appliances", [record(f"Fridge model {i}", 10.0 + i) for i in range(40)])
    overlay = root / "overlay.yaml"
    overlay.write_text(OVERLAY)
    args = cli_args(overlay, tiny_llama, root, root)
    main(["fit", *args, "--run_name", "done"])
    run = root / "runs" / "done"
    assert (run / "metrics.json").is_file() and (run / "adapter" / "pricer.json").is_file()
    return args, run


def refused(capsys, command: list[str]) -> str:
    with pytest.raises(SystemExit) as stop:
        main(command)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    if len(lines) == 2 and lines[1].endswith("--help lists the options)"):  # the parser's pointer
        lines = lines[:1]
    assert "Traceback" not in err and len(lines) == 1, err
    return err


def test_the_same_run_name_again_is_refused_and_changes_nothing(finished, capsys):
    args, run = finished
    before = folder_hash(run)
    err = refused(capsys, ["fit", *args, "--run_name", "done"])
    assert "already holds a trained run; nothing was changed" in err and "--ckpt_path last" in err
    assert folder_hash(run) == before


def test_resuming_a_finished_run_is_refused_and_changes_nothing(finished, capsys):
    args, run = finished
    before = folder_hash(run)
    err = refused(capsys, ["fit", *args, "--run_name", "done", "--ckpt_path", "last"])
    assert f"run {run} has finished" in err and "--model.adapter" in err
    err = refused(capsys, ["fit", *args, "--ckpt_path", str(run / "checkpoints" / "last.ckpt")])
    assert "has finished" in err
    assert folder_hash(run) == before
    assert json.loads((run / "adapter" / "pricer.json").read_text())  # still the fit's own recipe


def test_a_checkpoint_that_is_not_one_is_named_and_never_unpickled(finished, tmp_path, capsys):
    args, run = finished
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint\n")
    for path, words in (
        (text, "not a checkpoint (not one)"),
        (run / "adapter" / "adapter_model.safetensors", "a safetensors file"),
        (run / "checkpoints", "a folder"),
        (tmp_path / "missing.ckpt", "no such checkpoint file"),
    ):
        err = refused(capsys, ["test", *args, "--ckpt_path", str(path), "--run_name", "probe"])
        assert words in err and "weights_only" not in err, err
    pickled = tmp_path / "code.ckpt"
    torch.save({"state_dict": {}, "call": print}, pickled)  # a pickle that would import code
    err = refused(capsys, ["test", *args, "--ckpt_path", str(pickled), "--run_name", "probe"])
    assert "cannot be read as a checkpoint" in err and "weights_only" not in err and "False" not in err
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes((run / "checkpoints" / "last.ckpt").read_bytes()[:2000])
    err = refused(capsys, ["test", *args, "--ckpt_path", str(truncated), "--run_name", "probe"])
    assert "truncated.ckpt" in err and "not a checkpoint" in err
    assert not (run.parent / "probe").exists()


@pytest.mark.parametrize(
    "write, words",
    [
        (None, "no such file"),
        ("folder", "a folder, not a YAML file"),
        ("", "the file is empty"),
        ("# only a comment\n", "the file holds only comments"),
        ("trainer: [1, 2\nmodel: x\n", "not valid YAML at line"),
        ("- a\n- b\n", "holds a list, not sections"),
        (b"\xff\xfe\x00binary", "not a text file"),
    ],
)
def test_a_bad_config_file_is_named_in_one_line(tmp_path, capsys, write, words):
    config = tmp_path / "config.yaml"
    if write == "folder":
        config.mkdir()
    elif isinstance(write, bytes):
        config.write_bytes(write)
    elif write is not None:
        config.write_text(write)
    err = refused(capsys, ["fit", "--config", str(config)])
    assert f"--config {config}: {words}" in err, err


def test_a_root_folder_that_is_a_file_or_cannot_be_written_is_one_line(finished, tmp_path, capsys):
    args, _ = finished
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    for root, words in (
        (blocker / "runs", "is a file, not a folder"),
        (Path("/proc/pricer-runs"), "cannot write"),
    ):
        err = refused(capsys, ["fit", *args, "--trainer.default_root_dir", str(root), "--run_name", "x"])
        assert f"trainer.default_root_dir {root}" in err and words in err, err


def test_a_model_option_a_checkpoint_would_override_is_refused(finished, capsys):
    """Lightning reads a checkpoint's own settings over the config's: `--model.lora.r 4` was
    silently read as the checkpoint's 8."""
    args, run = finished
    last = str(run / "checkpoints" / "last.ckpt")
    err = refused(capsys, ["test", *args, "--ckpt_path", last, "--model.lora.r", "4", "--run_name", "probe"])
    assert "--model.lora.r 4: the checkpoint" in err and "trained with lora.r 8" in err
    assert not (run.parent / "probe").exists()


# Run as `python launch.py fit ...`: the real CLI, with a pause at the start of one phase
# (PRICER_STOP_AT) so a real signal sent on its marker arrives in that phase.
LAUNCH = """
import os, sys, time
from pricer.train.end_of_fit import ChooseBlend
from pricer.train.model import PriceModel

AT = os.environ["PRICER_STOP_AT"]
STEP_SECONDS = float(os.environ.get("PRICER_STEP_SECONDS", "0"))  # each training step made slower

def pause(phase):
    if phase == AT:
        print(f"PHASE {phase}", flush=True)
        time.sleep(4)

def wrap(name, phase, when=lambda *a: True, owner=PriceModel):
    original = getattr(owner, name)
    def wrapped(self, *args, **kwargs):
        if when(self, *args):
            pause(phase)
        return original(self, *args, **kwargs)
    setattr(owner, name, wrapped)

wrap("training_step", "train", lambda self, batch, index: self.global_step == 2)
if STEP_SECONDS:
    wrap("training_step", "slow", lambda self, batch, index: time.sleep(STEP_SECONDS))
wrap("choose", "blend", owner=ChooseBlend)
wrap("save_adapter", "save", lambda self, folder, *a: folder.name == "adapter")
wrap("test_step", "test", lambda self, batch, index: index == 0)
wrap("configure_model", "load")
from pricer.cli.commands import PricerCLI
wrap("_record_metrics_beside_the_adapter", "finish", owner=PricerCLI)

from pricer.cli.main import main
main(sys.argv[1:])
"""


def run_until(args: list[str], root: Path, phase: str, signum: int, step_seconds: float = 0):
    """The CLI in its own process; the signal sent when it reaches `phase`. Returns (exit status,
    output, seconds from the signal to the exit)."""
    import os
    import subprocess
    import sys
    import time

    from tests.conftest import REPO

    launch = root / "launch.py"
    launch.write_text(LAUNCH)
    env = {**os.environ, "PRICER_STOP_AT": phase, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    env["PRICER_STEP_SECONDS"] = str(step_seconds)
    process = subprocess.Popen(
        [sys.executable, str(launch), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    lines, sent = [], None
    for line in process.stdout:
        lines.append(line)
        if line.startswith(f"PHASE {phase}") and sent is None:
            process.send_signal(signum)
            sent = time.monotonic()
    process.wait(timeout=120)
    assert sent is not None, "".join(lines)[-3000:]
    return process.returncode, "".join(lines), time.monotonic() - sent


def run_printed(out: str, *extra: str):
    """The resume line a stopped command printed (`python -m pricer ...`), run as typed."""
    import os
    import shlex
    import subprocess
    import sys

    from tests.conftest import REPO

    line = out[out.index("python -m pricer") :].splitlines()[0]
    return subprocess.run(
        [sys.executable, *shlex.split(line)[1:], *extra],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "phase, signum",
    [
        ("train", "SIGTERM"),
        ("blend", "SIGTERM"),
        ("save", "SIGTERM"),
        ("test", "SIGTERM"),
        ("train", "SIGINT"),
    ],
)
def test_a_signal_in_any_phase_of_fit_stops_it_resumably(tiny_llama, tmp_path, phase, signum):
    import signal

    write_raw(tmp_path, "Appliances", [record(f"Fridge model {i}", 10.0 + i) for i in range(40)])
    overlay = tmp_path / "overlay.yaml"
    # two test batches, so a stop in the first is before the report
    overlay.write_text(fit_overlay(PUBLISHER, test_size="8\n  eval_batch_size: 4"))
    args = ["fit", *cli_args(overlay, tiny_llama, tmp_path, tmp_path), "--run_name", "stopped"]
    status, out, seconds = run_until(args, tmp_path, phase, getattr(signal, signum))
    run = tmp_path / "runs" / "stopped"
    assert status == 128 + getattr(signal, signum), out[-3000:]
    assert seconds < 30, seconds  # stopped at the phase's next safe point, not at its end
    assert f"pricer: stopped by {signum}; run {run}; it resumes" in out and "--ckpt_path last" in out, out[
        -2000:
    ]
    assert not (run / "metrics.json").exists()  # the report of a stopped test is never written
    assert not list(run.glob(".adapter*"))  # no half-written adapter
    if phase in ("train", "blend", "save"):
        assert not (run / "adapter").exists()
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] >= 2

    if (phase, signum) in (("train", "SIGTERM"), ("test", "SIGTERM")):  # the line it printed resumes it
        resumed = run_printed(out)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert (run / "metrics.json").is_file() and (run / "adapter" / "pricer.json").is_file()
        assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4


@pytest.mark.slow
def test_ctrl_c_after_fits_test_leaves_a_run_its_printed_line_finishes(tiny_llama, tmp_path):
    """Stopped after the test report but before the recipe and the card have its numbers: the
    run is not finished, and the printed resume line completes its end."""
    import signal

    write_raw(tmp_path, "Appliances", [record(f"Fridge model {i}", 10.0 + i) for i in range(40)])
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(OVERLAY)
    args = ["fit", *cli_args(overlay, tiny_llama, tmp_path, tmp_path), "--run_name", "stopped"]
    status, out, _ = run_until(args, tmp_path, "finish", signal.SIGINT)
    run = tmp_path / "runs" / "stopped"
    assert status == 130, out[-3000:]
    assert json.loads((run / "adapter" / "pricer.json").read_text())["metrics"] is None
    assert "--ckpt_path last" in out[out.index("python -m pricer") :].splitlines()[0]
    resumed = run_printed(out)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    recipe = json.loads((run / "adapter" / "pricer.json").read_text())
    assert recipe["metrics"]["n"] == json.loads((run / "metrics.json").read_text())["n"]
    card = (run / "hub" / "model" / "README.md").read_text()
    assert (run / "scatter.png").is_file() and f"On {recipe['metrics']['n']} held-out test items" in card


@pytest.mark.slow
@pytest.mark.parametrize("signum", ["SIGINT", "SIGTERM"])
def test_a_stop_before_the_first_checkpoint_says_to_start_again_not_to_resume(tiny_llama, tmp_path, signum):
    """Stopped while the model loads: training never starts (a SIGTERM there came before
    Lightning's own handler, which alone stops its training loop)."""
    import signal

    write_raw(tmp_path, "Appliances", [record(f"Fridge model {i}", 10.0 + i) for i in range(40)])
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(OVERLAY)
    args = ["fit", *cli_args(overlay, tiny_llama, tmp_path, tmp_path), "--run_name", "early"]
    status, out, _ = run_until(args, tmp_path, "load", getattr(signal, signum))
    assert status == 128 + getattr(signal, signum), out[-3000:]
    assert not (tmp_path / "runs" / "early" / "checkpoints").exists()  # not one training step
    assert "no checkpoint was saved yet; start it again with: python -m pricer fit" in out, out[-2000:]
    assert "--ckpt_path" not in out.split(f"pricer: stopped by {signum}")[-1]


@pytest.mark.slow
def test_a_killed_notebook_loses_at_most_the_checkpoint_interval_of_wall_time(tiny_llama, tmp_path):
    """A notebook that disconnects kills the process (no signal to catch): with checkpoints by
    wall time (CheckpointEveryMinutes, as configs/appliances.yaml lists it; steps alone would
    save none here), the last one is at most that old, and `--ckpt_path last` resumes from it."""
    import signal
    import subprocess
    import sys

    from tests.conftest import REPO

    write_raw(tmp_path, "Appliances", [record(f"Fridge model {i}", 10.0 + i) for i in range(40)])
    overlay = tmp_path / "overlay.yaml"
    by_time = "    - class_path: pricer.train.wall_clock.CheckpointEveryMinutes\n      init_args: {minutes: 0.0167}\n"
    overlay.write_text(fit_overlay(by_time).replace("every_n_train_steps: 2", "every_n_train_steps: 100"))
    args = ["fit", *cli_args(overlay, tiny_llama, tmp_path, tmp_path), "--run_name", "notebook"]
    status, out, _ = run_until(args, tmp_path, "train", signal.SIGKILL, step_seconds=0.7)
    run = tmp_path / "runs" / "notebook"
    assert status == -signal.SIGKILL, out[-3000:]
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert saved == 2  # the two 0.7 s steps before the kill: past the one-second interval
    resumed = subprocess.run(
        [sys.executable, "-m", "pricer", *args, "--ckpt_path", "last"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, "PYTHONPATH": str(REPO)},
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4
    assert (run / "metrics.json").is_file()


def copy_adapter(run: Path, to: Path) -> Path:
    import shutil

    return Path(shutil.copytree(run / "adapter", to))


def runs_after(run: Path) -> list[str]:
    return sorted(p.name for p in run.parent.iterdir())


def test_a_damaged_adapter_is_named_in_one_line_before_anything_loads(finished, tmp_path, capsys):
    args, run = finished
    before = runs_after(run)
    version = copy_adapter(run, tmp_path / "version")
    recipe = json.loads((version / "pricer.json").read_text())
    (version / "pricer.json").write_text(json.dumps({**recipe, "version": 99}))
    cut = copy_adapter(run, tmp_path / "cut")
    weights = cut / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    noise = copy_adapter(run, tmp_path / "noise")
    (noise / "adapter_model.safetensors").write_bytes(bytes(range(256)) * 40)
    tampered = copy_adapter(run, tmp_path / "tampered")
    (tampered / "train_items.parquet").write_bytes((tampered / "train_items.parquet").read_bytes() + b"\0")
    rank = copy_adapter(run, tmp_path / "rank")
    config = json.loads((rank / "adapter_config.json").read_text())
    (rank / "adapter_config.json").write_text(json.dumps({**config, "r": 4}))
    for adapter, words in (
        (version, "pricer.json"),
        (cut, "adapter_model.safetensors is not a readable safetensors file"),
        (noise, "adapter_model.safetensors is not a readable safetensors file"),
        (rank, "not rank 4 as adapter_config.json says"),
        (tampered, "train_items.parquet is not the file fit saved"),
        (tmp_path / "nowhere", "does not exist"),
    ):
        for command in ("predict", "test"):
            err = refused(capsys, [command, *args, "--model.adapter", str(adapter), "--run_name", "probe"])
            assert words in err and str(adapter) in err, err
    assert runs_after(run) == before


def test_a_base_that_is_not_a_model_is_named_in_one_line(finished, tmp_path, capsys):
    args, run = finished
    text = tmp_path / "model.gguf"
    text.write_text("not a model\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    for base, words in (
        (text, "is not a GGUF file (it starts with b'not '"),
        (empty, "folder without config.json"),
    ):
        for command in ("fit", "curate"):
            err = refused(capsys, [command, *args, "--model.base_model", str(base), "--run_name", "probe"])
            assert f"model.base_model: {base}" in err and words in err, err
    assert not (run.parent / "probe").exists()


def test_no_training_items_is_refused_when_parsed(finished, capsys):
    args, run = finished
    for command in ("curate", "fit"):
        err = refused(capsys, [command, *args, "--data.train_size", "0", "--run_name", "probe"])
        assert "data.train_size 0: training needs items" in err
    assert not (run.parent / "probe").exists()


def test_predict_refuses_what_the_space_refuses_and_writes_inert_cells(finished, tmp_path, capsys):
    import csv

    from pricer.data.products import NOTHING_TO_PRICE

    args, run = finished
    adapter = ["--model.adapter", str(run / "adapter")]
    before = runs_after(run)
    products = tmp_path / "products.jsonl"
    products.write_text(
        json.dumps({"title": "Kettle", "description": "A kettle."})
        + "\n"
        + json.dumps({"features": ["Red"]})
        + "\n"
    )
    table = tmp_path / "products.csv"
    table.write_text("title,description\nKettle,A kettle\n")
    folder = tmp_path / "a-folder"
    folder.mkdir()
    (folder / "notes.txt").write_text("hello\n")
    for source, words in (
        (products, f"{products}:2: {NOTHING_TO_PRICE}"),
        (table, "a .csv file; predict reads a JSONL of products"),
        (folder, "not a curated dataset predict can read"),
        (tmp_path / "missing.jsonl", "no such file"),
    ):
        err = refused(
            capsys, ["predict", *args, *adapter, "--data.predict_source", str(source), "--run_name", "probe"]
        )
        assert words in err, err
    assert runs_after(run) == before

    line = json.dumps({"title": '=HYPERLINK("http://x.example","click")', "description": "A kettle."})
    products.write_bytes(b"\xef\xbb\xbf" + line.encode())  # saved by an editor that writes a BOM
    main(["predict", *args, *adapter, "--data.predict_source", str(products), "--run_name", "priced"])
    capsys.readouterr()
    (row,) = list(csv.DictReader((run.parent / "priced" / "predict.csv").open()))
    assert row["title"] == "'" + '=HYPERLINK("http://x.example","click")'
    assert float(row["predicted"]) > 0


@pytest.mark.parametrize(
    "options, words",
    [
        (["--trainer.max_epochs", "-5"], "trainer: `max_epochs` must be a non-negative integer or -1"),
        (["--trainer.accelerator", "tpu"], "trainer: Requirement 'torch_xla"),
        (["--trainer.precision", "8-bit"], "not a valid choice: '8-bit'; choose from 64, 32, 16,"),
        (
            ["--model.optimizer.learning_rate", "-1"],
            "model.optimizer.learning_rate on the command line: Not of type PositiveFloat: -1 does not conform to restriction v>0",
        ),
        (
            ["--model.read.interval_coverage", "1.5"],
            "model.read.interval_coverage on the command line: Not of type OpenUnitInterval: 1.5 does not",
        ),
        (
            ["--model.optimizer.warmup_ratio", "1"],
            "model.optimizer.warmup_ratio on the command line: Not of type Fraction: 1 does not conform to restriction v>=0 and v<1",
        ),
        (["--model.lora.target_modules", "[q_proj, v_prj]"], "v_prj not in"),  # peft skips it
        (
            ["--data.batch_size", "0"],
            "data.batch_size on the command line: Not of type PositiveInt: 0 does not conform to restriction v>0",
        ),
        (
            ["--data.eval_batch_size", "0"],
            "data.eval_batch_size on the command line: Not of type PositiveInt",
        ),
        (
            ["--data.categories", "[Appliances, Appliances]"],
            "data.categories names Appliances more than once",
        ),
        (["--run_name", "../escape"], "--run_name '../escape': one folder name"),
        (["--ckpt_path", ""], "--ckpt_path is empty"),
    ],
)
def test_more_bad_options_end_in_one_line_and_leave_no_run_folder(finished, capsys, options, words):
    """Inputs found the way the issue's were, beyond its list: each one line, exit 2, and no
    folder left behind (a W&B logger makes its folder when built, before some checks run)."""
    args, run = finished
    before = runs_after(run)
    command = [*args, "--run_name", "probe", *options]
    err = refused(capsys, ["fit" if "--ckpt_path" not in options else "test", *command])
    assert words in err, err
    assert runs_after(run) == before
