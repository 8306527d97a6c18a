"""hetflow in the kernel: `%load_ext hetflow` registers `%%remote` and `%remote`; `hetflow.submit(fn, *args)` and
`hetflow.run(fn, *args)` run functions as tasks (see functions.py)."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["load_ipython_extension", "run", "submit"]


def __getattr__(name: str) -> Any:
    """`submit` and `run`, imported on first use: `import hetflow` stays cheap."""
    if name in ("submit", "run"):
        from . import functions

        return getattr(functions, name)
    raise AttributeError(f"module 'hetflow' has no attribute {name!r}")


def load_ipython_extension(ipython: Any) -> None:
    from .client import get_client
    from .futures import AwaitFutures, swap_finished
    from .magics import RemoteMagics

    ipython.register_magics(RemoteMagics)
    if not any(isinstance(t, AwaitFutures) for t in ipython.ast_transformers):
        ipython.ast_transformers.append(AwaitFutures(ipython.user_ns))
        ipython.events.register("pre_run_cell", lambda *_: swap_finished(ipython.user_ns))
    get_client()  # start the engine now, so its workers are warm by the first cell
