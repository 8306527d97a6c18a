"""What the kernel and the engine share: the submission's media type, the payload the runner reads, the hash that
names every blob, and every error that crosses between them (handlers.py turns each into its HTTP status).

Standard library only: the kernel imports this without the server's packages (tornado, jupyter_server).
"""

from __future__ import annotations

import hashlib
import pickle
import sys
from dataclasses import dataclass, field, fields

TASK_MEDIA_TYPE = "application/x-hetflow-task"  # a submission: a JSON line (the task spec), then the payload


def sha256(data: bytes) -> str:
    """The name of a blob (payload, input, result), checked on every transfer before anything is unpickled."""
    return hashlib.sha256(data).hexdigest()


def _cloudpickle_version() -> str:
    import cloudpickle  # here, not at the top: the engine's side reads this module without pickling anything

    return str(cloudpickle.__version__)


@dataclass(frozen=True, kw_only=True)
class Payload:
    """What the runner (runner.py) runs: a cell's code, its pickled inputs, and what it sends back. On the wire a
    plain dict, so that the runner needs nothing of hetflow's to read it."""

    code: str
    source: str  # what the user wrote (the magic's line too), for tracebacks
    filename: str  # how tracebacks name the cell: "Cell In[3]"
    line_offset: int = 0  # lines of `source` before `code`
    inputs: dict[str, bytes]  # name -> its cloudpickle
    outputs: list[str]
    outputs_explicit: bool = False  # the user named the outputs (outputs=...): a missing one is an error
    deleted: list[str] = field(default_factory=list)  # names the cell deletes
    display: bool = False  # the cell's last expression is its value
    cloudpickle: str = field(default_factory=_cloudpickle_version)  # that pickled the inputs: must match there
    python: str = f"{sys.version_info[0]}.{sys.version_info[1]}"  # named when an input cannot be unpickled

    def pickle(self) -> bytes:
        return pickle.dumps({f.name: getattr(self, f.name) for f in fields(self)}, protocol=5)


class SpecError(ValueError):
    """Bad input from the user (HTTP 400): raised before any side effect, its message says what to fix."""


class NotFound(SpecError):
    """No task, executor, credential or prompt goes by that name (HTTP 404)."""


class StoreError(RuntimeError):
    """The store cannot give what it should hold: a blob missing or not matching its hash (HTTP 500)."""


@dataclass(frozen=True)
class KeptResult:
    """A result left where it was computed (on a Dask cluster, in a host's blob store): its hash and size now, its
    bytes on demand."""

    digest: str
    size: int


class ResultGone(LookupError):
    """Results kept where they were computed are no longer there (a scratch purge, a cleaned store): the tasks
    that computed them (`tasks`, by id) must run again."""

    def __init__(self, message: str, tasks: list[str]):
        super().__init__(message)
        self.tasks = tasks


class TransportError(RuntimeError):
    """The machine could not be reached just now: retry later (HTTP 502)."""


class AccessError(RuntimeError):
    """The machine refused us (host key, credential): retrying will not help; the message says what to fix (HTTP
    502)."""


class AnswerRefused(TransportError):
    """The server refused the answers to its prompts (a wrong or late one-time code), or nobody answered: the work
    that needed the connection fails or waits, and the next connection asks again. Not retried on its own: each
    try would ask the user once more."""


class EngineUnreachable(RuntimeError):
    """The kernel's engine does not answer (its Jupyter server went away), or answered with a server error."""
