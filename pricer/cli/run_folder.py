"""One run, one folder: `<trainer.default_root_dir>/<run name>` holds everything a run writes.

The resolved `config.yaml`, `checkpoints/`, the final `adapter/` and the W&B offline run all
land there: the logger's and the checkpoint callback's folders are derived from it here, before
anything is instantiated, so nothing lands elsewhere.
"""

from __future__ import annotations

import os
import re
from datetime import datetime
from pathlib import Path

from jsonargparse import Namespace

from pricer.files import RunFolderError

LAST = "last.ckpt"
# Lightning's DDP launcher starts the other processes by running the same command again: they
# must land in the run folder rank 0 named, not in one named by their own clock.
RUN_NAME_ENV = "PRICER_RUN_NAME"


def timestamp() -> str:
    return datetime.now().strftime("%Y%m%d-%H%M%S")


def last_checkpoint(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / LAST


def latest_run(root: Path) -> Path | None:
    """The most recently written run under root that has a last checkpoint."""
    runs = [p.parent.parent for p in root.glob(f"*/checkpoints/{LAST}")]
    return max(runs, key=lambda p: last_checkpoint(p).stat().st_mtime) if runs else None


def _entries(value) -> list:
    if value is None or isinstance(value, bool):
        return []
    return list(value) if isinstance(value, list) else [value]


def _is(entry, name: str) -> bool:
    return isinstance(entry, Namespace) and str(entry.get("class_path", "")).endswith(name)


def wandb_credentials() -> bool:
    """Whether W&B could log in: WANDB_API_KEY, or `wandb login`'s entry in the netrc file."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    import netrc

    path = Path(os.environ.get("NETRC") or Path.home() / ".netrc")
    try:
        hosts = netrc.netrc(str(path)).hosts
    except (OSError, netrc.NetrcParseError):
        return False
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].split("/")[0]
    return host in hosts


def wandb_offline() -> tuple[bool, str]:
    """(offline, why): online whenever W&B has credentials, offline when WANDB_MODE says so or
    when it has none."""
    mode = os.environ.get("WANDB_MODE")
    if mode:
        offline = mode in ("offline", "disabled", "dryrun")
        return offline, f"WANDB_MODE={mode}"
    if wandb_credentials():
        return False, "logged in"
    return True, "no W&B credentials: `wandb login` or WANDB_API_KEY to log online"


def finished_run(run_dir: Path) -> bool:
    """Whether a fit ran to its end here: its adapter, with its recipe, its test report, and the
    report's headline in the recipe (the last of fit's own end, so a stop before it leaves a
    run that `--ckpt_path last` finishes)."""
    import json

    recipe, report = run_dir / "adapter" / "pricer.json", run_dir / "metrics.json"
    if not (recipe.is_file() and report.is_file()):
        return False
    try:
        return json.loads(recipe.read_text()).get("metrics") is not None
    except (OSError, ValueError, AttributeError):
        return False


def read_checkpoint(path: str) -> dict:
    """A checkpoint's contents, loaded as tensors and plain types only (never pickled code), or
    one line saying what the file is instead."""
    import zipfile

    import torch

    option = f"--ckpt_path {path}"
    if not str(path).strip():
        raise RunFolderError("--ckpt_path is empty: name a .ckpt file, or `last`")
    file = Path(path).expanduser()
    if file.is_dir():
        raise RunFolderError(f"{option}: a folder; name a .ckpt file (<run>/checkpoints/last.ckpt)")
    if not file.is_file():
        raise RunFolderError(f"{option}: no such checkpoint file")
    if not zipfile.is_zipfile(file) or not any(
        n.endswith("/data.pkl") for n in zipfile.ZipFile(file).namelist()
    ):
        kind = "a safetensors file (an adapter's weights?)" if file.suffix == ".safetensors" else "not one"
        raise RunFolderError(
            f"{option}: not a checkpoint ({kind}); pricer's are the .ckpt files in <run>/checkpoints/"
        )
    import pickle

    try:
        checkpoint = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise RunFolderError(
            f"{option}: cannot be read as a checkpoint: it holds objects other than tensors and plain "
            "types, and pricer never loads code from a checkpoint"
        ) from None
    except Exception as error:  # a damaged file: what torch says, in one line
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise RunFolderError(f"{option}: cannot be read as a checkpoint ({first[:200]})") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise RunFolderError(f"{option}: not a Lightning checkpoint (no state_dict in it)")
    return checkpoint


def trains_further(ckpt_path: str, trainer: Namespace) -> bool:
    """Whether resuming this checkpoint would train any step under the trainer's limits (a
    larger max_epochs or max_steps than the run had), as Lightning's fit loop decides."""
    checkpoint = read_checkpoint(ckpt_path)
    step = int(checkpoint.get("global_step", 0))
    progress = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_loop.batch_progress", {})
    epochs = int(checkpoint.get("epoch", 0)) + (1 if progress.get("is_last_batch") else 0)
    max_steps = trainer.get("max_steps")
    max_steps = -1 if max_steps is None else max_steps
    max_epochs = trainer.get("max_epochs")
    if max_epochs is None:  # Lightning's defaults
        max_epochs = 1000 if max_steps == -1 else -1
    if max_steps != -1 and step >= max_steps:
        return False
    return max_epochs == -1 or epochs < max_epochs


def check_fit_target(run_dir: Path, ckpt_path: str | None, trainer: Namespace) -> None:
    """`fit` never changes a run that holds training: a run folder is written once. The same
    name without `--ckpt_path` would retrain over it; `--ckpt_path last` on a finished run would
    train no step and redo its end (the blend, the report, the staged Hub folder). Resuming a
    finished run with larger limits trains further, and redoes that end from its own reads."""
    if os.environ.get("LOCAL_RANK", "0") != "0":
        return  # a DDP process started by rank 0, into the folder rank 0 has begun
    adapter = run_dir / "adapter"
    test = f"`python -m pricer test --model.adapter {adapter}`"
    further = f"`--model.adapter {adapter} --run_name <new name>` (a new run from its weights)"
    resumed = ckpt_path is not None and Path(ckpt_path).resolve().is_relative_to(run_dir.resolve())
    if finished_run(run_dir) and resumed and not trains_further(ckpt_path, trainer):
        raise RunFolderError(
            f"run {run_dir} has finished (its adapter and test report are written); nothing was "
            f"changed. Measure it again with {test}; train further with {further}"
        )
    if not resumed and trained_run(run_dir):
        raise RunFolderError(
            f"run {run_dir} already holds a trained run; nothing was changed. Resume it with "
            f"`--run_name {run_dir.name} --ckpt_path last`, measure it with {test}, or start "
            "another with a new --run_name"
        )


def check_root(root: Path) -> None:
    """trainer.default_root_dir is, or can be made, a folder this process writes into; nothing
    is made yet (the first bad input must leave no folder behind)."""
    option = f"trainer.default_root_dir {root}"
    absolute = root.expanduser().absolute()
    existing = next(p for p in (absolute, *absolute.parents) if p.exists())
    if not existing.is_dir():
        raise RunFolderError(f"{option}: {existing} is a file, not a folder")
    import tempfile

    try:  # asked of the file system itself (permissions, a read-only mount, root's too)
        os.rmdir(tempfile.mkdtemp(prefix=".pricer-write-check-", dir=existing))
    except OSError as error:
        raise RunFolderError(f"{option}: cannot write into {existing} ({error.strerror})") from None


def place_run(
    config: Namespace, run_name: str | None, ckpt_path: str | None, subcommand: str | None = None
) -> tuple[Path, str | None]:
    """Point the trainer, its loggers and checkpoint callbacks at the run folder.

    `ckpt_path: last` resumes the named run's last checkpoint (without a name, the latest run
    under the root that has one); when there is none it is an error, never a fresh start.
    `fit` into a run that holds training is refused (`check_fit_target`). Returns the run folder
    and the checkpoint path to use.
    """
    trainer = config.trainer
    if run_name is not None and (
        not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", str(run_name)) or ".." in str(run_name)
    ):
        raise RunFolderError(
            f"--run_name {run_name!r}: one folder name of letters, digits, '.', '_' and '-' (it goes "
            "under trainer.default_root_dir)"
        )
    root = Path(trainer.default_root_dir or "runs")
    if ckpt_path not in (None, "last", "best"):
        read_checkpoint(ckpt_path)  # before any folder exists: a checkpoint, and a readable one
    if ckpt_path == "last" and run_name is None:
        latest = latest_run(root)
        if latest is None:
            raise RunFolderError(
                f"--ckpt_path last: no run under {root} has a checkpoint ({root}/*/checkpoints/{LAST})"
            )
        run_name = latest.name
    if (
        run_name is None
        and ckpt_path not in (None, "last", "best")
        and Path(ckpt_path).parent.name == "checkpoints"
    ):
        # `test --ckpt_path runs/x/checkpoints/last.ckpt` reports into runs/x, beside the training
        run_dir = Path(ckpt_path).parent.parent
        root, run_name = run_dir.parent, run_dir.name
        trainer.default_root_dir = str(root)
    if run_name is None:
        launched = os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("NODE_RANK", "0") != "0"
        run_name = os.environ.get(RUN_NAME_ENV) if launched else None
        run_name = run_name or timestamp()
    run_dir = root / run_name
    if ckpt_path == "last":
        last = last_checkpoint(run_dir)
        if not last.is_file():
            raise RunFolderError(f"--ckpt_path last: run {run_dir} has no checkpoint ({last} does not exist)")
        ckpt_path = str(last)
    if subcommand == "fit":
        check_fit_target(run_dir, ckpt_path, trainer)
    check_root(root)
    os.environ[RUN_NAME_ENV] = run_name
    trainer.default_root_dir = str(run_dir)
    for logger in _entries(trainer.logger):
        if _is(logger, "WandbLogger"):
            logger.init_args.save_dir = str(run_dir)
            logger.init_args.name = run_dir.name
            offline, why = wandb_offline()
            if logger.init_args.get("offline"):
                offline, why = True, "offline: true in the config"
            logger.init_args.offline = offline
            print(f"W&B: {'offline' if offline else 'online'} ({why}); files in {run_dir / 'wandb'}")
        elif _is(logger, "CSVLogger") or _is(logger, "TensorBoardLogger"):
            logger.init_args.save_dir = str(run_dir)
            logger.init_args.name = "logs"
            logger.init_args.version = ""
    for callback in _entries(trainer.callbacks):
        if _is(callback, "ModelCheckpoint"):
            callback.init_args.dirpath = str(run_dir / "checkpoints")
    return run_dir, ckpt_path


def evaluation_name(source: str, split: str = "test") -> str:
    """A folder name for an evaluation: the data source's last part, and the split."""
    last = str(source).rstrip("/").removeprefix("hf://").split("/")[-1] or "source"
    slug = "".join(c if c.isalnum() or c in "-_." else "-" for c in last).strip("-.") or "source"
    return f"{slug}-{split}"


def trained_run(run_dir: Path) -> bool:
    """Whether a run folder already holds a fit (its checkpoints or its adapter)."""
    return (run_dir / "checkpoints").is_dir() or (run_dir / "adapter").is_dir()


def place_evaluation(config: Namespace, run_dir: Path, name: str) -> Path:
    """`test` of a trained run reports into `<run>/evaluations/<name>/`, never over the fit's own
    report (metrics.json, predictions.csv, the card's source) or its config.yaml."""
    folder = run_dir / "evaluations" / name
    config.trainer.default_root_dir = str(folder)
    for logger in _entries(config.trainer.logger):
        if _is(logger, "WandbLogger"):
            logger.init_args.save_dir = str(folder)
            logger.init_args.name = f"{run_dir.name}-{name}"
        elif _is(logger, "CSVLogger") or _is(logger, "TensorBoardLogger"):
            logger.init_args.save_dir = str(folder)
    return folder
