"""One run, one folder: `<trainer.default_root_dir>/<run name>` holds everything a run writes.

The resolved `config.yaml`, `checkpoints/`, the final `adapter/` and the W&B offline run all
land there: the logger's and the checkpoint callback's folders are derived from it here, before
anything is instantiated, so nothing lands elsewhere.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from jsonargparse import Namespace

LAST = "last.ckpt"
# Lightning's DDP launcher starts the other processes by running the same command again: they
# must land in the run folder rank 0 named, not in one named by their own clock.
RUN_NAME_ENV = "PRICER_RUN_NAME"


class RunFolderError(ValueError):
    """A run folder or checkpoint asked for does not exist; the message says where it looked."""


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


def place_run(config: Namespace, run_name: str | None, ckpt_path: str | None) -> tuple[Path, str | None]:
    """Point the trainer, its loggers and checkpoint callbacks at the run folder.

    `ckpt_path: last` resumes the named run's last checkpoint (without a name, the latest run
    under the root that has one); when there is none it is an error, never a fresh start.
    Returns the run folder and the checkpoint path to use.
    """
    trainer = config.trainer
    root = Path(trainer.default_root_dir or "runs")
    if ckpt_path not in (None, "last", "best") and not Path(ckpt_path).expanduser().is_file():
        raise RunFolderError(f"--ckpt_path {ckpt_path}: no such checkpoint file")
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
    os.environ[RUN_NAME_ENV] = run_name
    run_dir = root / run_name
    if ckpt_path == "last":
        last = last_checkpoint(run_dir)
        if not last.is_file():
            raise RunFolderError(f"--ckpt_path last: run {run_dir} has no checkpoint ({last} does not exist)")
        ckpt_path = str(last)
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
