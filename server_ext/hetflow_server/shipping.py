"""What travels between the engine and wherever a task runs, in one place: the runner program (its source, the name
it has where it is shipped, its hash), the frame format of the warm workers' pipes, the runner's input (one
envelope builder for every kind) and the reading of its outcome (the result is checked against the hash the runner
wrote beside it, whether it comes from a file, S3 or a Dask pack), and the names of one job's files.

Every executor kind goes through here, so that a change to the runner's protocol is one change.
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import runner
from .protocol import KeptResult, sha256

RUNNER_SOURCE = Path(runner.__file__).read_bytes()
RUNNER_SHA256 = sha256(RUNNER_SOURCE)
RUNNER_NAME = f"runner-{RUNNER_SHA256[:12]}.py"  # one file per runner version: engines of two versions can share a root
HEADER = runner.HEADER  # a frame on a worker's pipe: this length prefix, then a pickle
read_frame, write_frame = runner.read_frame, runner.write_frame


def _file(suffix: str) -> Any:
    return property(lambda paths: paths.base + suffix)


@dataclass(frozen=True)
class JobPaths:
    """Every file of one attempt at a task, named from one base: `DIR/task` in a remote directory, `SPOOL/TASK` in
    a local spool, `FOLDER/TASK` under an S3 prefix. The runner writes `.log`, `.result` and, last, `.done`."""

    base: str
    job = _file(".job")  # the runner's input (the envelope, pickled)
    log = _file(".log")
    result = _file(".result")
    done = _file(".done")  # JSON: the error, or the result's sha256

    @property
    def directory(self) -> str:
        return os.path.dirname(self.base)

    def beside(self, name: str) -> str:
        """Another file of the job's directory (the batch system's output, the job script)."""
        return f"{self.directory}/{name}"


class LaunchError(RuntimeError):
    """The job could not be handed over (the batch system refused it, an input cannot be shipped); the message says
    why, quoting the system."""


# An upstream result as the runner reads it: its bytes ({"data"}), a file where the runner runs ({"path"}), or the
# outcome of an upstream Dask pack that Dask moves to the worker ({"pack": position, "task": id}).
Source = dict[str, Any]


def envelope(job: Any, sources: Mapping[str, Source] | None = None, *, payload: bool = True) -> dict[str, Any]:
    """The runner's input: the payload with the per-task inputs (a foreach element, upstream results) and the
    context a provider reads. An upstream result comes from `sources` (by upstream task id), else from the engine's
    store. Without `payload`, the runner is handed the payload separately (shared by many tasks, sent once)."""
    sources = sources or {}

    def ref(up: Any) -> dict[str, Any]:
        return {"hash": up.result_hash, "output": up.output, **(sources.get(up.task_id) or up.source())}

    refs = {
        name: {"each": [ref(up) for up in found]} if isinstance(found, list) else ref(found)
        for name, found in job.refs.items()
    }
    shipped = {"task": job.task_id, "payload": job.payload if payload else b"", "bound": job.bound, "refs": refs}
    return {**shipped, "context": job.context} if job.context else shipped


def inlined(job: Any) -> dict[str, Source]:
    """Every upstream result of the job as bytes, for a runner that cannot read the engine's store."""
    sources = {}
    for up in job.upstreams():
        data = up.held()
        if data is None:
            raise LaunchError(f"the result of upstream task {up.task_id} is not in the engine's store")
        sources[up.task_id] = {"data": data}
    return sources


def pickled(message: Any) -> bytes:
    return pickle.dumps(message, protocol=5)


@dataclass(frozen=True)
class Outcome:
    """What a task left: its result pickle, or an error description (never unpickled: it is JSON)."""

    result: bytes | KeptResult | None
    error: dict[str, str] | None


def parse_done(data: bytes, where: str) -> Outcome | str:
    """The runner's done file: the Outcome when it decides alone (the task failed; the file is not what a runner
    writes), else the hash the result must have."""
    try:
        said = json.loads(data)
        error = said["error"] and {str(key): str(value) for key, value in said["error"].items()}
        digest = said.get("sha256")
    except (ValueError, TypeError, KeyError, AttributeError):
        return Outcome(None, {"type": "IntegrityError", "message": f"{where} is not what a task writes"})
    return Outcome(None, error) if error else str(digest or "")


def kept_result(data: bytes) -> KeptResult | None:
    """What a done file says of a result its runner left in the executor's blob store (None: it did not)."""
    try:
        said = json.loads(data)
        return KeptResult(str(said["sha256"]), int(said["kept"])) if said.get("kept") and not said["error"] else None
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


def checked(result: bytes | None, digest: str, where: str) -> Outcome:
    """The result, if it is there and hashes to what its task wrote."""
    if result is None:
        return Outcome(None, {"type": "ResultMissing", "message": f"{where} is missing"})
    if sha256(result) != digest:
        return Outcome(None, {"type": "IntegrityError", "message": f"{where} does not match the hash its task wrote"})
    return Outcome(result, None)


async def read_outcome(read: Callable[[str], Awaitable[bytes | None]], paths: JobPaths, where: str) -> Outcome | None:
    """The outcome a job left at `paths`, read with `read` (a transport's, S3's); None while there is no done file.
    `where` prefixes the paths in messages (host:, s3://bucket/)."""
    done = await read(paths.done)
    if done is None:
        return None
    said = parse_done(done, where + paths.done)
    return said if isinstance(said, Outcome) else checked(await read(paths.result), said, where + paths.result)


def spooled_outcome(said: dict[str, Any], paths: JobPaths) -> Outcome:
    """A warm local worker's done record (from its pipe, or from its journal after an engine restart): the error,
    or the result it carries (a large one is in `TASK.result`), checked against the hash the runner wrote."""
    if said.get("error"):
        return Outcome(None, {str(key): str(value) for key, value in said["error"].items()})
    result = said.get("result")
    if result is None:
        path = Path(paths.result)
        result = path.read_bytes() if path.exists() else None
    return checked(result, str(said.get("sha256") or ""), paths.result)
