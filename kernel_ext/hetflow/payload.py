"""What a task is submitted with, shared by `%%remote` cells and `hetflow.submit`: the inputs (pickled here, or
references to the tasks whose futures stand in for them; the payload that carries them is protocol.Payload) and
where the task came from (the notebook and the cell)."""

from __future__ import annotations

import os
from typing import Any, TypedDict

import cloudpickle

from hetflow_server.protocol import SpecError, sha256

from .futures import ORIGINS, Future

CELL_HINT = "Create it inside the cell, or leave it out with inputs=..."


def pickled(label: str, value: Any, hint: str = CELL_HINT) -> bytes:
    try:
        return cloudpickle.dumps(value, protocol=5)
    except Exception as err:
        raise SpecError(f"{label} ({type(value).__name__}) cannot be pickled: {err}. {hint}") from None


def split_inputs(
    values: dict[str, Any], labels: dict[str, str] | None = None, hint: str = CELL_HINT
) -> tuple[dict[str, list[Any]], dict[str, bytes], dict[str, list[Any]]]:
    """(refs, pickles, origins): an unfinished future (or one whose result is not here) becomes a dependency on
    its task, and its data need not come through the kernel; anything else is pickled, and a value that is,
    unchanged, a finished future's output is named with that output (TaskSpec.origins: the same data has one
    cache key, whether the cell read it before or after the task ended)."""
    refs, pickles, origins = {}, {}, {}
    for name, value in values.items():
        if isinstance(value, Future) and not (value.done() and value.submission.at_hand()):
            refs[name] = value.ref
            continue
        if isinstance(value, Future):
            value = value.result()
        pickles[name] = data = pickled((labels or {}).get(name, f"input {name!r}"), value, hint)
        same_size = ORIGINS.get(len(data))  # only a pickle of the very size is hashed here
        ref = same_size.get(sha256(data)) if same_size else None
        if ref is not None:
            origins[name] = ref
    return refs, pickles, origins


class Origin(TypedDict):
    notebook: str | None
    cell_id: str | None


def origin(shell: Any) -> Origin:
    """The notebook (Jupyter names it in JPY_SESSION_NAME) and the cell id (JupyterLab sends it with each run)."""
    kernel = getattr(shell, "kernel", None)
    parent = kernel.get_parent() if kernel is not None and hasattr(kernel, "get_parent") else None
    cell_id = ((parent or {}).get("metadata") or {}).get("cellId")
    return {"notebook": os.environ.get("JPY_SESSION_NAME"), "cell_id": cell_id}
