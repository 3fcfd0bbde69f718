"""SIGTERM and Ctrl-C honoured in every phase of a command, and the line that resumes it.

Lightning's own SIGTERM handler only sets a flag on the trainer that is running, and forgets it
when the next run starts: a SIGTERM during fit's end (the validation read, the blend, saving
the adapter) was lost when fit's test started, which then ran to its end. pricer records the
signal for the whole command (Lightning calls this handler beside its own), stops at the next
safe point of any phase, and exits with the status a killed process has (128 + the signal),
printing the command that resumes the run.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import sys

from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException

requested: int | None = None  # the signal received, until the command ends
# what `resume_line` needs: set once the run folder is known
context: dict = {}


_owner: int | None = None  # the process that installed the handlers


def _record(signum, frame) -> None:
    global requested
    if os.getpid() != _owner:
        # a forked worker (curation's pool, a data loader's) inherits the handler: it dies of
        # the signal as it would have without pricer, so `Pool.terminate()` can end it
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    requested = signum
    if signum == signal.SIGINT:
        raise KeyboardInterrupt


def install() -> dict:
    """pricer's handlers for this process (the main thread only, where Python allows them);
    returns the handlers they replaced, for `uninstall`."""
    global requested, _owner
    requested, _owner = None, os.getpid()
    context.clear()
    previous = {}
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(ValueError):  # not the main thread: the caller's handlers stay
            previous[signum] = signal.signal(signum, _record)
    return previous


def uninstall(previous: dict) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def stop_here(trainer=None) -> None:
    """Stop now if a SIGTERM came (recorded here, or by Lightning's handler on `trainer`)."""
    if requested == signal.SIGTERM or (trainer is not None and getattr(trainer, "received_sigterm", False)):
        raise SIGTERMException(128 + signal.SIGTERM)


class StopAtNextBatch(Callback):
    """Every loop of every command stops at its next batch once a SIGTERM came. Lightning's
    training loop stops only for a signal its own handler saw, which it installs when training
    starts (a SIGTERM while the model loads would train the whole run); its predict loop never stops,
    and its evaluation loops read their last batch whatever comes."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        stop_here(trainer)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        stop_here(trainer)

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        stop_here(trainer)

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        stop_here(trainer)


def resume_line(args: list[str]) -> str | None:
    """What to type to go on after a stop: the same command on the same run, from its last
    checkpoint (fit), or the same command again."""
    subcommand, run_dir = context.get("subcommand"), context.get("run_dir")
    if subcommand is None:
        return None
    if subcommand != "fit" or run_dir is None:
        return "run the same command again: " + shlex.join(["python", "-m", "pricer", *args])
    kept, skip = [], False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg in ("--ckpt_path", "--run_name"):
            skip = True
            continue
        if arg.startswith(("--ckpt_path=", "--run_name=")):
            continue
        kept.append(arg)
    if not (run_dir / "checkpoints" / "last.ckpt").is_file():
        # nothing to resume: a new run, under a new name (this one's folder may hold its start)
        return "no checkpoint was saved yet; start it again with: " + shlex.join(
            ["python", "-m", "pricer", *kept]
        )
    line = ["python", "-m", "pricer", *kept, "--run_name", run_dir.name, "--ckpt_path", "last"]
    return "it resumes from its last checkpoint with: " + shlex.join(line)


def stopped(signum: int, args: list[str]) -> int:
    """Say where the command stopped and how to go on; the exit status to use."""
    name = signal.Signals(signum).name
    run_dir = context.get("run_dir")
    parts = [f"pricer: stopped by {name}"]
    if run_dir is not None:
        parts.append(f"run {run_dir}")
    how = resume_line(args)
    if how:
        parts.append(how)
    print("; ".join(parts), file=sys.stderr)
    return 128 + signum
