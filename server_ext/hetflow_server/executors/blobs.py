"""Content-addressed blobs at an executor: the large values a job reads (the payload's inputs, foreach elements,
upstream results the engine holds) travel apart from the job, named by their sha256, into the executor's blob
store; only those the store lacks cross the link, so a value read by a whole foreach, or by the next cells, is sent
once. The runner checks each blob against its hash before unpickling it (runner._blob) and evicts the least
recently used (runner.blob_store).
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from typing import Any

from ..protocol import sha256
from ..shipping import envelope, inlined
from .base import Job


class _Plain(pickle.Unpickler):
    """Loads plain data only (a payload is a dict of strings, bytes, lists and numbers): never a class or a
    function, so the engine can look into a payload without running anything."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"{module}.{name} in a payload")


def _plain(data: bytes) -> dict[str, Any] | None:
    try:
        found = _Plain(io.BytesIO(data)).load()
    except Exception:  # not a payload the kernel wrote: it travels whole
        return None
    return found if isinstance(found, dict) and isinstance(found.get("inputs"), dict) else None


@dataclass
class Slim:
    """A job's envelope with its large values replaced by references into the blob store, and those values."""

    envelope: dict[str, Any]
    blobs: dict[str, bytes]  # by sha256


def slimmed(job: Job, directory: str, least: int) -> Slim:
    """The job's envelope, each value of at least `least` bytes a reference to `DIRECTORY/SHA256`."""
    blobs: dict[str, bytes] = {}

    def ref(data: bytes) -> dict[str, Any]:
        digest = sha256(data)
        blobs[digest] = data
        return {"hash": digest, "path": f"{directory}/{digest}"}

    sources = {
        task: {**ref(source["data"]), "blob": True} if len(source["data"]) >= least else source
        for task, source in inlined(job).items()
    }
    shipped = envelope(job, sources)
    spec = _plain(job.payload) if len(job.payload) >= least else None
    large = {n: v for n, v in (spec or {}).get("inputs", {}).items() if isinstance(v, bytes) and len(v) >= least}
    if spec is not None and large:
        small = {name: value for name, value in spec["inputs"].items() if name not in large}
        shipped["payload"] = pickle.dumps({**spec, "inputs": small}, protocol=5)
        shipped["inputs"] = {name: ref(value) for name, value in large.items()}
    shipped["bound"] = {name: ref(v) if len(v) >= least else v for name, v in job.bound.items()}
    return Slim(shipped, blobs)
