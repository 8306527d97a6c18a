"""The engine: store, scheduler, executors, credentials and events behind one async API (for handlers and kernels)."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
import uuid
from typing import Any

from .credentials import Credentials
from .events import Events, Listener
from .executors import Executor, executor_class
from .models import MAX_SECONDS, State, Task, TaskSpec, read_executor_options, ref_ids
from .prompts import Prompts
from .protocol import NotFound, ResultGone, SpecError, StoreError, sha256
from .retention import RETENTION_EVERY, Forgotten, forget
from .scheduler import Scheduler
from .settings import Hetflow
from .store import Store

UNFINISHED = [State.PENDING, State.QUEUED, State.RUNNING]
log = logging.getLogger(__name__)
DECODE_CHUNK = 50  # tasks of a listing decoded and encoded between two turns of the loop


class Engine:
    def __init__(self, settings: Hetflow):
        self.settings = settings
        self.events = Events()
        self.executors: dict[str, Executor] = {}
        self.prompts = Prompts(self.events, self._waiting, settings.prompt_timeout)
        self._store: Store | None = None
        self._scheduler: Scheduler | None = None
        self._credentials: Credentials | None = None
        self._retention: asyncio.TimerHandle | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            raise RuntimeError("the engine has not started")
        return self._store

    @property
    def scheduler(self) -> Scheduler:
        if self._scheduler is None:
            raise RuntimeError("the engine has not started")
        return self._scheduler

    @property
    def credentials(self) -> Credentials:
        if self._credentials is None:
            raise RuntimeError("the engine has not started")
        return self._credentials

    async def start(self) -> None:
        """Own the store, start the executors, then take back what a previous engine left unfinished."""
        store = Store(self.settings.store_path, log_limit=self.settings.log_limit)
        store.acquire()
        self._store = store
        self._credentials = Credentials(store.root / "credentials.json")
        self._scheduler = Scheduler(store, self.events, self.executors, self.settings, self._credentials)
        try:
            for name, config in self.settings.all_executors.items():
                if "kind" not in config:
                    raise SpecError(f"executor {name!r} has no 'kind' in c.Hetflow.executors")
                kind = executor_class(config["kind"])
                spool = store.spool_dir / name
                self.executors[name] = kind(
                    name,
                    self._scheduler,
                    spool,
                    credentials=self._credentials.get,
                    asker=functools.partial(self.prompts.asker, name),
                    **config,
                )
            for executor in self.executors.values():
                await executor.start()
            for task in reversed(store.find_tasks(states=UNFINISHED)):  # oldest first
                await self._scheduler.recover(task)
            self._forget_every()
        except BaseException:  # a bad setting: let go of the store and of what started, for a corrected start
            await self.close()
            raise

    def _waiting(self, executor: str) -> list[str]:
        """The executor's tasks that are handed to it and not ended: those a login question holds up."""
        return [t.id for t in self.store.find_tasks(states=[State.QUEUED, State.RUNNING]) if t.executor == executor]

    async def close(self) -> None:
        if self._retention is not None:
            self._retention.cancel()
        self.prompts.close()
        for executor in self.executors.values():
            await executor.close()
        if self._scheduler:
            self._scheduler.close()
        if self._store:
            self._store.close()

    # --------------------------------------------------------------------------- tasks

    def _executor_for(self, spec: TaskSpec) -> tuple[str, dict[str, Any]]:
        name = spec.executor or self.settings.default_executor
        executor = self.executors.get(name)
        if executor is None:
            known = ", ".join(sorted(self.executors)) or "none"
            raise SpecError(f"executor {name!r} is not configured (configured: {known}); add it to c.Hetflow.executors")
        return name, {**executor.defaults, **read_executor_options(executor.kind, executor.options, spec.options)}

    async def submit(
        self,
        spec: TaskSpec,
        payload: bytes,
        elements: list[bytes] | None = None,
        listener: Listener | None = None,
    ) -> tuple[list[Task], bool]:
        """Validate, then serve from the cache or create and queue the task (one per element of a foreach).
        Returns the tasks and whether all of them came from the cache."""
        executor, options = self._executor_for(spec)
        upstream, origins = self._upstream(spec), self._origins(spec)
        blobs: dict[str, bytes] = {}  # the elements of a foreach, by hash
        if spec.foreach is None:
            if elements:
                raise SpecError("elements were sent for a cell without foreach=")
            key = cache_key(spec, executor, options, spec.inputs, upstream, origins)
            cached = self.store.find_cached(key) if spec.cache else None
            if cached is not None:
                self.store.add_event(cached, "served from the cache")
                return [cached], True
            payload_hash = sha256(payload)  # stored with the task, in its transaction
            tasks = [self._new_task(spec, executor, options, key, payload_hash, upstream)]
        else:
            payload_hash = sha256(payload)
            tasks, blobs = self._elements(spec, executor, options, payload_hash, elements or [], upstream, origins)
        if listener is not None:
            for task in tasks:
                self.events.subscribe(listener, task.id)
        await self.scheduler.add(tasks, {payload_hash: payload, **blobs})
        return tasks, bool(tasks) and all(t.state is State.COMPLETED for t in tasks)

    def _upstream(self, spec: TaskSpec) -> dict[str, Task]:
        """The tasks this one depends on (by the futures it reads, and after=), by id."""
        found: dict[str, Task] = {}
        for name, (source, output) in spec.refs.items():
            for task_id in ref_ids(source):
                task = self.scheduler.lookup(task_id)
                if task is None:
                    raise SpecError(f"input {name!r} is a future of task {task_id}, which this engine does not know")
                if output not in task.outputs:
                    raise SpecError(f"input {name!r}: task {task.label} has no output {output!r}")
                found[task.id] = task
        for ref in spec.after:
            for task in self._targets(self.find(ref)):  # after a foreach: after every element
                found[task.id] = task
        return found

    def _origins(self, spec: TaskSpec) -> dict[str, Task]:
        """The tasks whose outputs the inputs named in spec.origins are (by id); one this engine no longer knows
        leaves its input keyed by its hash."""
        found: dict[str, Task] = {}
        for source, output in spec.origins.values():
            tasks = [self.scheduler.lookup(task_id) for task_id in ref_ids(source)]
            if all(t is not None and output in t.outputs for t in tasks):
                found.update((t.id, t) for t in tasks if t is not None)
        return found

    def _new_task(
        self,
        spec: TaskSpec,
        executor: str,
        options: dict[str, Any],
        key: str,
        payload_hash: str,
        upstream: dict[str, Task],
        **element: Any,
    ) -> Task:
        return Task(
            id=uuid.uuid4().hex[:12],
            name=spec.name,
            state=State.PENDING,
            executor=executor,
            options=options,
            code=spec.code,
            inputs=dict(spec.inputs),
            outputs=spec.outputs,
            notebook=spec.notebook,
            cell_id=spec.cell_id,
            retries=spec.retries,
            timeout=spec.timeout,
            deps=list(upstream),
            refs=spec.refs,
            cache_key=key,
            payload_hash=payload_hash,
            created=time.time(),
            bring=spec.bring,
            **element,
        )

    def _elements(
        self,
        spec: TaskSpec,
        executor: str,
        options: dict[str, Any],
        payload_hash: str,
        elements: list[bytes],
        upstream: dict[str, Task],
        origins: dict[str, Task],
    ) -> tuple[list[Task], dict[str, bytes]]:
        """One task per element of a foreach, each given its element; an element computed before (same code,
        inputs and element) is a new task served from the cache at once."""
        assert spec.foreach is not None
        group, blobs, tasks = uuid.uuid4().hex[:12], {}, []
        for n, element in enumerate(elements):
            digest = sha256(element)
            blobs[digest] = element
            key = cache_key(spec, executor, options, {**spec.inputs, spec.foreach: digest}, upstream, origins)
            task = self._new_task(
                spec,
                executor,
                options,
                key,
                payload_hash,
                upstream,
                bound={spec.foreach: digest},
                group_id=group,
                element=n,
            )
            task.inputs[spec.foreach] = digest
            cached = self.store.find_cached(key) if spec.cache else None
            if cached is not None:
                task.state, task.result_hash, task.attempts = State.COMPLETED, cached.result_hash, 0
            tasks.append(task)
        return tasks, blobs

    def find(self, ref: str) -> Task:
        """A task by id, or the newest task of that name."""
        task = self.store.get_task(ref)
        if task is None:
            named = self.store.find_tasks(name=ref, limit=1)
            task = named[0] if named else None
        if task is None:
            raise NotFound(f"no task has the id or name {ref!r}; %remote status lists them")
        return task

    def tasks(
        self,
        notebook: str | None = None,
        states: list[State] | None = None,
        limit: int | None = None,
        before: str | None = None,
    ) -> list[Task]:
        return self.store.find_tasks(notebook=notebook, states=states, limit=limit, before=before)

    def history(self, ref: str) -> list[dict[str, Any]]:
        return self.store.events(self.find(ref).id)

    def _targets(self, task: Task) -> list[Task]:
        """A task, or every element of the foreach it belongs to."""
        return self.store.group(task.group_id) if task.group_id else [task]

    async def cancel(self, ref: str) -> Task:
        """Stop a task (every unfinished element of a foreach) and what waits for it."""
        task = self.find(ref)
        for target in self._targets(task):
            await self.scheduler.cancel(target)
        return self.scheduler.lookup(task.id) or task

    async def retry(self, ref: str) -> list[Task]:
        """Run a failed or cancelled task again (the failed elements of a foreach), then its dependents."""
        task = self.find(ref)
        targets = [t for t in self._targets(task) if t.state in (State.FAILED, State.CANCELLED)]
        if not targets:
            raise SpecError(f"task {task.name!r} is {task.state.value}; only a failed or cancelled task is retried")
        return await self.scheduler.rerun(targets, "retried by the user")

    async def rerun(self, ref: str) -> list[Task]:
        """Run a finished task again, bypassing the cache, then its dependents. Of a foreach, the elements that
        failed or were cancelled run again, or all of them when none did."""
        task = self.find(ref)
        targets = self._targets(task)
        unfinished = [t for t in targets if not t.state.final]
        if unfinished:
            raise SpecError(f"task {unfinished[0].label!r} is {unfinished[0].state.value}; re-run it once it has ended")
        failed = [t for t in targets if t.state in (State.FAILED, State.CANCELLED)]
        return await self.scheduler.rerun(failed or targets, "re-run by the user")

    async def pin(self, ref: str) -> Task:
        """Keep a task (every element of a foreach) whatever its age or the store's size."""
        return self._pinned(ref, True)

    async def unpin(self, ref: str) -> Task:
        """Let retention forget the task again."""
        return self._pinned(ref, False)

    def _pinned(self, ref: str, pinned: bool) -> Task:
        task = self.find(ref)
        for target in self._targets(task):
            live = self.scheduler.lookup(target.id) or target
            live.pinned = pinned
            self.store.update_task(live, "pinned")
        return self.scheduler.lookup(task.id) or self.find(task.id)

    def forget(self, keep_days: float | None = None) -> Forgotten:
        """Retention now (retention.py): ended tasks that finished more than `keep_days` ago (0: every ended task;
        without it c.Hetflow.keep_days, where 0 keeps them), then the oldest while the store is over
        c.Hetflow.keep_bytes."""
        if keep_days is not None and not 0 <= keep_days <= MAX_SECONDS / 86400:
            raise SpecError(f"keep_days must be from 0 to {MAX_SECONDS / 86400:g} days, not {keep_days:g}")
        days = keep_days if keep_days is not None else self.settings.keep_days or None
        return forget(self.store, days, self.settings.keep_bytes)

    def _forget_every(self) -> None:
        """Retention at the start, then every RETENTION_EVERY seconds."""
        forgotten = self.forget()
        if forgotten.tasks:
            log.info(
                "hetflow forgot %d ended tasks (%d blobs, %d bytes)", forgotten.tasks, forgotten.blobs, forgotten.bytes
            )
        self._retention = asyncio.get_running_loop().call_later(RETENTION_EVERY, self._forget_every)

    async def result(self, ref: str) -> tuple[Task, bytes]:
        """A completed task's result pickle, fetched from its executor if it was kept there."""
        task = self.find(ref)
        if task.state is not State.COMPLETED or not task.result_hash:
            raise SpecError(f"task {task.label!r} is {task.state.value}; it has no result")
        return task, (await self._fetched([task]))[0]

    async def _fetched(self, tasks: list[Task]) -> list[bytes]:
        """Their results; those kept where they were computed and gone since are computed again (and the answer
        says so: ask again once they complete)."""
        try:
            return await self.scheduler.results.fetch_many(tasks)
        except ResultGone as gone:
            again = [t for t in tasks if t.id in gone.tasks]
            await self.scheduler.rerun(again, f"its result is gone ({gone}); running it again")
            names = ", ".join(t.label for t in again)
            raise StoreError(f"{gone}: {names} running again; ask for the result once it has completed") from None

    async def group_results(self, ref: str) -> list[tuple[Task, bytes | None]]:
        """Each element of the task's foreach (or the task alone) with its result, fetched where kept."""
        tasks = self._targets(self.find(ref))
        done = [t for t in tasks if t.state is State.COMPLETED and t.result_hash]
        results = dict(zip([t.id for t in done], await self._fetched(done), strict=True))
        return [(task, results.get(task.id)) for task in tasks]

    def logs(self, ref: str, offset: int = 0, limit: int | None = None) -> bytes:
        """A byte range of the task's (masked) log."""
        path = self.store.log_path(self.find(ref).id)
        try:
            with open(path, "rb") as fh:
                fh.seek(offset)
                return fh.read(-1 if limit is None else limit)
        except FileNotFoundError:
            return b""

    def graph(self, notebook: str | None = None, limit: int | None = None) -> dict[str, Any]:
        """The newest `limit` tasks (all without one) and the dependencies among them; `more`: older ones exist."""
        rows, more = self._newest(limit, notebook=notebook)
        tasks = [Task.from_row(row) for row in rows]
        return {"nodes": [t.to_json() for t in tasks], "edges": _edges(tasks), "more": more}

    def _newest(self, limit: int | None, **where: Any) -> tuple[list[dict[str, Any]], bool]:
        """The rows of the newest `limit` tasks (all without one), and whether older ones exist (a row more is read
        to know)."""
        rows = self.store.task_rows(limit=None if limit is None else limit + 1, **where)
        return rows[:limit], limit is not None and len(rows) > limit

    async def tasks_json(
        self, notebook: str | None, states: list[State] | None, limit: int | None, before: str | None
    ) -> str:
        """A page of the task list (as `tasks`, with `next`: the `before` of the next page) as JSON text, for the
        API: built without holding up other requests (see _encoded)."""
        rows, more = self._newest(limit, notebook=notebook, states=states, before=before)
        tasks, texts = await _encoded(rows)
        return f'{{"tasks": [{", ".join(texts)}], "next": {json.dumps(tasks[-1].id if more else None)}}}'

    async def graph_json(self, notebook: str | None, limit: int | None) -> str:
        """`graph` as JSON text, for the API, built as tasks_json is."""
        rows, more = self._newest(limit, notebook=notebook)
        tasks, texts = await _encoded(rows)
        return f'{{"nodes": [{", ".join(texts)}], "edges": {json.dumps(_edges(tasks))}, "more": {json.dumps(more)}}}'

    def describe_executors(self) -> dict[str, dict[str, Any]]:
        return {name: executor.describe() for name, executor in self.executors.items()}

    def executor(self, name: str) -> Executor:
        if name not in self.executors:
            raise NotFound(f"no executor is named {name!r}; configured: {', '.join(self.executors)}")
        return self.executors[name]

    async def clean(self, name: str) -> dict[str, Any]:
        """Empty the executor's blob store (but what running tasks read): `%remote clean`, the executor panel."""
        return {"name": name, **(await self.executor(name).clean())}


def cache_key(
    spec: TaskSpec,
    executor: str,
    options: dict[str, Any],
    inputs: dict[str, str],
    upstream: dict[str, Task],
    origins: dict[str, Task] | None = None,
) -> str:
    """Same code, same inputs, same outputs asked for, same executor and options, same upstream computations:
    same result. A task run with cache=false gets a key of its own: what depends on it never matches a result
    computed from another of its runs. An input whose value is a known task's output (`origins`, the tasks by
    id) is keyed as a dependency on that output would be."""
    origins = origins or {}
    same = {
        name: ref for name, ref in spec.origins.items() if name in inputs and all(t in origins for t in ref_ids(ref[0]))
    }
    known = {**origins, **upstream}
    material = {
        "code": spec.code,
        "inputs": {name: digest for name, digest in inputs.items() if name not in same},
        "outputs": spec.outputs,
        "executor": executor,
        "options": options,
    }
    if not spec.cache:
        material["uncached"] = uuid.uuid4().hex
    if known:  # keys of tasks without dependencies stay as they were before dependencies existed
        material["refs"] = {
            name: [[known[t].cache_key for t in ref_ids(source)], out]
            for name, (source, out) in {**spec.refs, **same}.items()
        }
        data_deps = {t for source, _ in spec.refs.values() for t in ref_ids(source)}
        material["after"] = sorted(str(u.cache_key) for t, u in upstream.items() if t not in data_deps)
    return sha256(json.dumps(material, sort_keys=True, default=str).encode())


def _edges(tasks: list[Task]) -> list[dict[str, str]]:
    """The dependencies among these tasks."""
    ids = {t.id for t in tasks}
    return [{"source": dep, "target": t.id} for t in tasks for dep in t.deps if dep in ids]


async def _encoded(rows: list[dict[str, Any]]) -> tuple[list[Task], list[str]]:
    """The tasks of these rows, and each as JSON text, DECODE_CHUNK at a time with the loop let go in between:
    the first page of 20,000 tasks, decoded and encoded at once, held up every other request 40-140 ms."""
    tasks, texts = [], []
    for start in range(0, len(rows), DECODE_CHUNK):
        for row in rows[start : start + DECODE_CHUNK]:
            task = Task.from_row(row)
            tasks.append(task)
            texts.append(json.dumps(task.to_json()))
        await asyncio.sleep(0)
    return tasks, texts
