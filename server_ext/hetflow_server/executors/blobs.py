"""Content-addressed blobs at an executor (the ssh and slurm kinds): the large values a job reads (the payload's
inputs, foreach elements, upstream results) travel apart from the job, named by their sha256, into the executor's
blob store `REMOTE_ROOT/blobs`; only those the store lacks cross the link, so a value read by a whole foreach, or by
the next cells, is sent once. Large results stay there too (the runner links them in): a downstream task on the same
executor reads them in place, and they cross only when something here needs them. The runner checks each blob
against its hash before unpickling it (runner._blob) and evicts the least recently used (runner.blob_store).
"""

from __future__ import annotations

import io
import pickle
import shlex
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ..protocol import AccessError, ResultGone, sha256
from ..shipping import LaunchError, envelope, pickled
from ..transport import Transport
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
    """A job's envelope with its large values replaced by references into the blob store, those values, and the
    results it reads that are kept in the store already (hash -> the task that computed it)."""

    envelope: dict[str, Any]
    blobs: dict[str, bytes] = field(default_factory=dict)  # by sha256
    kept: dict[str, str] = field(default_factory=dict)


def slimmed(job: Job, directory: str, least: int, here: str, keep: int = 0, payload_apart: bool = False) -> Slim:
    """The job's envelope, each value of at least `least` bytes a reference to `DIRECTORY/SHA256`; an upstream
    result the engine does not hold must be kept by this executor (`here`). A result of at least `keep` bytes
    (0: none) stays in the store. `payload_apart`: the (slimmed) payload is a blob too, whatever its size (the
    tasks of a foreach, and later runs of the cell, share it)."""
    slim = Slim({})

    def ref(digest: str, data: bytes | None = None) -> dict[str, Any]:
        if data is not None:
            slim.blobs[digest] = data
        return {"hash": digest, "path": f"{directory}/{digest}", "blob": True}

    sources: dict[str, dict[str, Any]] = {}
    for up in job.upstreams():
        data = up.held()
        if data is None and up.executor != here:
            raise LaunchError(f"the result of upstream task {up.task_id} is not in the engine's store")
        if data is None:
            slim.kept[up.result_hash] = up.task_id
        sources[up.task_id] = ref(up.result_hash, data) if data is None or len(data) >= least else {"data": data}
    slim.envelope = envelope(job, sources)
    spec = _plain(job.payload) if len(job.payload) >= least else None
    large = {n: v for n, v in (spec or {}).get("inputs", {}).items() if isinstance(v, bytes) and len(v) >= least}
    if spec is not None and large:
        small = {name: value for name, value in spec["inputs"].items() if name not in large}
        slim.envelope["payload"] = pickle.dumps({**spec, "inputs": small}, protocol=5)
        slim.envelope["inputs"] = {name: ref(sha256(value), value) for name, value in large.items()}
    slim.envelope["bound"] = {n: ref(sha256(v), v) if len(v) >= least else v for n, v in job.bound.items()}
    if payload_apart:
        slim.envelope["payload"] = ref(sha256(slim.envelope["payload"]), slim.envelope["payload"])
    if keep:
        slim.envelope["keep"] = {"dir": directory, "least": keep}
    return slim


class BlobStore:
    """The blob store as the engine sees it: one command per launch says which blobs are there (and evicts to the
    limits), the missing ones are written whole (a `.part` renamed, or inside the pack's tar), kept results are
    read back on demand, and what running tasks read is never evicted."""

    def __init__(self, executor: str, where: str, runner: Callable[[str], str]):
        self.executor = executor  # its name: upstream results it kept are read in place
        self.where = where  # user@host, for messages
        self.runner = runner  # the runner's command line with these arguments
        self.directory = ""  # REMOTE_ROOT/blobs, once connected
        self.uses: dict[str, set[str]] = {}  # task id -> the blobs it reads

    async def ship(
        self, transport: Transport, jobs: list[Job], least: int, keep: int, limits: tuple[int, float]
    ) -> tuple[list[bytes | ResultGone], dict[str, bytes]]:
        """Each job's file (or why it cannot go: results it reads are gone), and the blobs the store lacks."""
        slim = [slimmed(job, self.directory, least, self.executor, keep) for job in jobs]
        blobs = {digest: data for one in slim for digest, data in one.blobs.items()}
        kept = {digest: task for one in slim for digest, task in one.kept.items()}
        present: set[str] = set()
        if blobs or kept:
            sizes = {**{digest: 0 for digest in kept}, **{digest: len(data) for digest, data in blobs.items()}}
            present, _ = await self.ask(transport, sizes, *limits)
        files: list[bytes | ResultGone] = []
        for job, one in zip(jobs, slim, strict=True):
            gone = [task for digest, task in one.kept.items() if digest not in present]
            if gone:
                files.append(ResultGone(f"results kept in {self.directory} on {self.where} are gone", gone))
                continue
            self.uses[job.task_id] = set(one.blobs) | set(one.kept)
            files.append(pickled(one.envelope))
        return files, {digest: data for digest, data in blobs.items() if digest not in present}

    async def ask(
        self, transport: Transport, wanted: dict[str, int], limit: int, age: float
    ) -> tuple[set[str], tuple[int, int]]:
        """Which wanted blobs (hash -> size) the store holds, and (count, bytes) evicted to make room (limit in
        bytes, age in seconds; -1: none)."""
        in_use = {digest for used in self.uses.values() for digest in used}
        marks = " ".join([*(f"+{d}:{size}" for d, size in wanted.items()), *(f"={d}" for d in in_use - set(wanted))])
        answer = await transport.run(self.runner(f"blobs {shlex.quote(self.directory)} {limit} {age:g} {marks}"))
        lines = answer.out.split()
        if answer.code or "::evicted" not in lines:
            raise AccessError(f"the blob store {self.directory} on {self.where}: {(answer.err or answer.out).strip()}")
        at = lines.index("::evicted")
        return set(lines[:at]), (int(lines[at + 1]), int(lines[at + 2]))

    async def put(self, transport: Transport, blobs: dict[str, bytes]) -> None:
        for digest, data in blobs.items():  # written aside and renamed in: a blob is there whole or not at all
            await transport.write(f"{self.directory}/{digest}.part", data)
            await transport.rename(f"{self.directory}/{digest}.part", f"{self.directory}/{digest}")

    async def fetch(self, read: Callable[[str], Awaitable[bytes | None]], kept: dict[str, str]) -> list[bytes]:
        """Kept results (task id -> hash); ResultGone names the tasks whose result is gone or does not match."""
        found, gone = [], []
        for task, digest in kept.items():
            data = await read(f"{self.directory}/{digest}")
            if data is None or sha256(data) != digest:
                gone.append(task)
            found.append(data or b"")
        if gone:
            raise ResultGone(f"results kept in {self.directory} on {self.where} are gone", gone)
        return found
