"""Log lines a pricer user cannot act on, filtered out of every command and the Space."""

from __future__ import annotations

import logging
import warnings

# Python warnings from the stack that a pricer user cannot act on (each is about code inside
# transformers, Lightning or torchdata, or a state pricer sets on purpose): message patterns.
NOT_FOR_USERS = (
    r"`is_gradient_checkpointing` is deprecated",  # transformers calling its own old name
    r"'set_vital' is deprecated",  # torchdata's loader calling a deprecated torch function
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",  # Lightning's pytree helper
    r"Precision .* is not supported by the model summary",  # the summary's size estimate
)


class _NotForUsers(logging.Filter):
    """Drops log lines a pricer user cannot act on: Lightning's advert for its LitLogger, and
    bitsandbytes' notice that the optional `kernels` package (which fetches code from the Hub,
    so pricer does not install it) is missing on the CPU."""

    NOISE = (
        "💡 Tip: For seamless cloud logging",
        "Failed to load CPU gemm_4bit_forward from kernels-community",
    )

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.NOISE)


def quiet_logs() -> None:
    for pattern in NOT_FOR_USERS:
        warnings.filterwarnings("ignore", message=f".*{pattern}")
    for name in ("lightning.pytorch.utilities.rank_zero", "bitsandbytes.backends.cpu.ops"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _NotForUsers) for f in logger.filters):
            logger.addFilter(_NotForUsers())
