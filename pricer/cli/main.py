"""`python -m pricer`: runs the command line, and ends every bad input in one `pricer: error:`
line (exit 2), a SIGTERM in 143 and a Ctrl-C in 130 with the line that resumes the run."""

from __future__ import annotations

import signal
import sys

from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.utilities.exceptions import SIGTERMException

from pricer import hub_calls as hub
from pricer.base.quantization import QuantizationUnavailable
from pricer.cli.commands import build_cli
from pricer.cli.logs import quiet_logs
from pricer.cli.run_folder import (
    RunFolderError,
)
from pricer.data.curate import CurationError
from pricer.data.raw import SourceError
from pricer.options import OptionError
from pricer.read.recipe import RecipeError
from pricer.read.tfidf import BlendError
from pricer.train import stopping


def _cause(error: BaseException, kind: type) -> BaseException | None:
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, kind):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def _remove_an_empty_run_folder() -> None:
    """A run folder this command made before its input was found bad (the W&B logger makes its
    folder when it is built) goes again, when it holds nothing a run produced."""
    import shutil

    run_dir = stopping.context.get("run_dir")
    if run_dir is None or not stopping.context.get("created") or not run_dir.is_dir():
        return
    produced = ("checkpoints", "adapter", "metrics.json", "predict.csv", "validation.csv", "hub")
    if not any((run_dir / name).exists() for name in produced):
        shutil.rmtree(run_dir, ignore_errors=True)


def main(args: list[str] | None = None) -> None:
    quiet_logs()
    typed = [str(a) for a in (sys.argv[1:] if args is None else args)]
    previous = stopping.install()
    try:
        build_cli(args)
        stopping.stop_here()  # a SIGTERM in the command's last moments still ends it as one
    except SIGTERMException:
        raise SystemExit(stopping.stopped(signal.SIGTERM, typed)) from None
    except KeyboardInterrupt:
        raise SystemExit(stopping.stopped(signal.SIGINT, typed)) from None
    except SystemExit as exit_:
        # Lightning answers Ctrl-C during a run with sys.exit(1)
        if stopping.requested == signal.SIGINT and exit_.code == 1:
            raise SystemExit(stopping.stopped(signal.SIGINT, typed)) from None
        raise
    except (
        SourceError,
        CurationError,
        RecipeError,
        BlendError,
        RunFolderError,
        OptionError,
        QuantizationUnavailable,
        FileNotFoundError,
        PermissionError,
        hub.HubPublishError,
        MisconfigurationException,
    ) as error:
        # Bad input is the user's to fix: say what and where, without a traceback.
        where = "trainer: " if isinstance(error, MisconfigurationException) else ""
        print(f"pricer: error: {where}{' '.join(str(error).split())}", file=sys.stderr)
        _remove_an_empty_run_folder()
        raise SystemExit(2) from None
    except ModuleNotFoundError as error:
        # Lightning's own requirement checks ("Requirement 'torch_xla>=1.13' not met") for an
        # accelerator or logger that this machine lacks: an option to change, not a crash
        if "Requirement" not in str(error):
            raise
        print(f"pricer: error: trainer: {' '.join(str(error).split())}", file=sys.stderr)
        _remove_an_empty_run_folder()
        raise SystemExit(2) from None
    except ValueError as error:
        # jsonargparse wraps an option's own check (a dataclass's, say) in its own ValueError
        option = _cause(error, OptionError)
        if option is None:
            raise
        print(f"pricer: error: {option}", file=sys.stderr)
        _remove_an_empty_run_folder()
        raise SystemExit(2) from None
    finally:
        stopping.uninstall(previous)
        # A command that failed midway must not leave its W&B run open for the next one.
        wandb = sys.modules.get("wandb")
        if wandb is not None and wandb.run is not None:
            wandb.finish(exit_code=1)
