"""hetflow in the kernel: `%load_ext hetflow` registers `%%remote` and `%remote`."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def load_ipython_extension(ipython: Any) -> None:
    from .client import get_client
    from .magics import RemoteMagics

    ipython.register_magics(RemoteMagics)
    get_client()  # start the engine now, so its workers are warm by the first cell
