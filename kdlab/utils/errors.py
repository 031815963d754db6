"""Which errors are the user's to fix (one message) and which are kdlab's (a traceback)."""

from __future__ import annotations

from lightning.fabric.utilities.exceptions import MisconfigurationException

from kdlab.utils.checkpoint_io import DiskFull


def root_cause(err: BaseException) -> BaseException:
    """The error under Hydra's wrappers (``instantiate`` re-raises a constructor's error as an
    ``InstantiationException`` from it); kdlab's own errors keep the cause they were raised
    from (a failed download's URLError) as detail, not as the message."""
    from hydra.errors import HydraException

    while isinstance(err, HydraException) and err.__cause__ is not None:
        err = err.__cause__
    return err


def user_error(err: BaseException) -> bool:
    """A bad value, a missing file, a refused setting: kdlab raises these with a message that
    says what to do, so a traceback would only bury it. Anything else is a bug to report."""
    return isinstance(
        root_cause(err),
        ValueError | FileNotFoundError | PermissionError | DiskFull | MisconfigurationException,
    )
