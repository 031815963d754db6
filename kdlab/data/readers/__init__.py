"""Dataset readers: one per on-disk layout (``kdlab.data.readers.base.Reader``).

``conf/data/<name>.yaml`` names its reader by ``_target_``; ``builtin(name)`` gives the reader
of a dataset kdlab ships, for configs written before readers existed (``name: cifar10``).
"""

from __future__ import annotations

from kdlab.data.readers.base import VERIFY, DataError, Reader

__all__ = ["VERIFY", "DataError", "Reader", "builtin", "BUILTIN"]

BUILTIN = ("cifar10", "cifar100", "svhn", "stl10")


def builtin(name: str) -> Reader:
    """The reader of a dataset kdlab ships by name (others need ``data.reader._target_``)."""
    if name in ("cifar10", "cifar100"):
        from kdlab.data.readers.cifar import CIFARReader

        return CIFARReader(name)
    if name == "svhn":
        from kdlab.data.readers.svhn import SVHNReader

        return SVHNReader()
    if name == "stl10":
        from kdlab.data.readers.stl10 import STL10Reader

        return STL10Reader()
    raise DataError(
        f"unknown dataset {name!r}: kdlab ships {', '.join(BUILTIN)} and image_folder "
        "(data=image_folder data.root=DIR); another dataset is a reader class named by "
        "data.reader._target_ (README: Adding a dataset)"
    )
