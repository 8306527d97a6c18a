"""Results and blobs: what a task needs to run (its payload, bound values, upstream results) and what it produced.

Kept apart from the scheduler because where a blob is (in memory for a new task, in the store, or kept by the
executor that computed it) is its own question: results stay where they were made until something here needs them,
and every one brought in is checked against its hash.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .executors import Executor, Job, KeptResult, Upstream
from .models import Task, ref_ids
from .protocol import StoreError
from .store import Store

INLINE_RESULT = 256 * 1024  # results up to this size ride along with the completion event


class Results:
    """Builds the executors' jobs from the blobs they need, records results, and fetches those kept remotely."""

    def __init__(self, store: Store, executors: dict[str, Executor], lookup: Callable[[str], Task | None]):
        self.store, self.executors, self.lookup = store, executors, lookup
        self._blobs: dict[str, bytes] = {}  # payloads and element values of new tasks, not read back from the store

    def hold(self, blobs: dict[str, bytes]) -> None:
        """New tasks' blobs (stored too), kept in memory until they are handed over."""
        self._blobs.update(blobs)

    def drop_held(self) -> None:
        """What was held is handed over: later jobs read their blobs from the store."""
        self._blobs.clear()

    def _blob(self, digest: str) -> bytes:
        return self._blobs.get(digest) or self.store.get_blob(digest)

    async def job(self, task: Task) -> Job:
        """What the executor runs: the task's payload, its bound values and its upstream results."""
        refs: dict[str, Upstream | list[Upstream]] = {}
        for name, (source, output) in task.refs.items():
            found = await self._upstream(task, ref_ids(source), output)
            refs[name] = found if isinstance(source, list) else found[0]
            # what this run used: an upstream re-run with a new result re-runs this task
            task.inputs[name] = ",".join(up.result_hash for up in found)
        if refs:
            self.store.update_task(task, "inputs")
        bound = {name: self._blob(digest) for name, digest in task.bound.items()}
        payload = self._blob(task.payload_hash or "")
        return Job(task.id, payload, task.options, bound, refs, timeout=task.timeout, bring=task.bring)

    async def _upstream(self, task: Task, upstream_ids: list[str], output: str) -> list[Upstream]:
        """Upstream results for one input: left where they are when the task runs on the executor that keeps
        them, else brought into the store first."""
        found = []
        for upstream_id in upstream_ids:
            upstream = self.lookup(upstream_id)
            if upstream is None or not upstream.result_hash:
                raise LookupError(f"upstream task {upstream_id} has no result")
            found.append(upstream)
        kept = self.executors.get(task.executor)
        elsewhere = [
            u
            for u in found
            if not (u.executor == task.executor and kept is not None and kept.holds(u.id, u.result_hash or ""))
        ]
        await self.fetch_many([u for u in elsewhere if not self.store.has_blob(u.result_hash or "")])
        return [
            Upstream(u.id, output, u.result_hash or "", u.executor, *self._stored(u.result_hash or "")) for u in found
        ]

    def _stored(self, digest: str) -> tuple[Path | None, bytes | None]:
        """Where a result in the store is for a runner: a large one's file, or a small one's bytes."""
        path = self.store.blob_file(digest)
        if path is not None or not self.store.has_blob(digest):
            return path, None
        return None, self.store.get_blob(digest)

    def record(self, task: Task, result: bytes | KeptResult) -> dict[str, Any]:
        """Set the task's result hash, storing the result unless its executor keeps it; returns what rides along
        with the completion event (a small result, so that a waiting kernel need not fetch it)."""
        if isinstance(result, KeptResult):
            task.result_hash = result.digest
            return {}
        task.result_hash = self.store.put_blob(result)
        return {"result": result} if len(result) <= INLINE_RESULT else {}

    async def fetch(self, task: Task) -> bytes:
        return (await self.fetch_many([task]))[0]

    async def fetch_many(self, tasks: list[Task]) -> list[bytes]:
        """Results, with those their executor kept where they were computed brought into the store first (one
        round trip per executor; every hash checked)."""
        kept: dict[str, list[Task]] = {}
        for task in tasks:
            assert task.result_hash
            if not self.store.has_blob(task.result_hash):
                executor = self.executors.get(task.executor)
                if executor is None or not executor.holds(task.id, task.result_hash):
                    raise StoreError(
                        f"the result of {task.label} was kept by the {task.executor} executor and is gone (the "
                        f"cluster or the engine restarted); %remote rerun {task.name} computes it again"
                    )
                kept.setdefault(task.executor, []).append(task)
        for name, waiting in kept.items():
            wanted = {t.id: t.result_hash or "" for t in waiting}
            for task, data in zip(waiting, await self.executors[name].fetch_results(wanted), strict=True):
                if self.store.put_blob(data) != task.result_hash:
                    raise StoreError(f"the result of {task.label} from {task.executor} does not match its hash")
                self.store.add_event(task, f"result fetched from {task.executor} ({len(data)} bytes)")
        return [self.store.get_blob(task.result_hash or "") for task in tasks]
