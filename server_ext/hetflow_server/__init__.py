"""hetflow's engine: tasks, store, scheduler, executors. Kept import-light: the runner's workers import it."""

from typing import Any

__version__ = "0.1.0"


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from .extension import HetflowApp

    return [{"module": "hetflow_server.extension", "app": HetflowApp}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """The sidebar, built into `labextension/` beside this file (`jupyter labextension develop` links it)."""
    return [{"src": "labextension", "dest": "hetflow"}]
