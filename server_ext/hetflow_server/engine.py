"""The engine: store, scheduler, executors, credentials and events behind one async API (for handlers and kernels)."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from typing import Any

from .credentials import Credentials
from .events import Events, Listener
from .executors import Executor, executor_class
from .models import SpecError, State, Task, TaskSpec, read_executor_options
from .scheduler import Scheduler
from .settings import Hetflow
from .store import Store

UNFINISHED = [State.PENDING, State.QUEUED, State.RUNNING]


class Engine:
    def __init__(self, settings: Hetflow):
        self.settings = settings
        self.events = Events()
        self.executors: dict[str, Executor] = {}
        self._store: Store | None = None
        self._scheduler: Scheduler | None = None
        self._credentials: Credentials | None = None

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
        store = Store(self.settings.store_path)
        store.acquire()
        self._store = store
        self._credentials = Credentials(store.root / "credentials.json")
        self._scheduler = Scheduler(store, self.events, self.executors, self.settings, self._credentials)
        for name, config in self.settings.executors.items():
            if "kind" not in config:
                raise SpecError(f"executor {name!r} has no 'kind' in c.Hetflow.executors")
            kind = executor_class(config["kind"])
            spool = store.root / "spool" / name
            self.executors[name] = kind(name, self._scheduler, spool, credentials=self._credentials.get, **config)
        for executor in self.executors.values():
            await executor.start()
        for task in reversed(store.find_tasks(states=UNFINISHED)):  # oldest first
            await self._scheduler.recover(task)

    async def close(self) -> None:
        for executor in self.executors.values():
            await executor.close()
        if self._store:
            self._store.close()

    # --------------------------------------------------------------------------- tasks

    def _executor_for(self, spec: TaskSpec) -> tuple[str, dict[str, Any]]:
        name = spec.executor or self.settings.default_executor
        executor = self.executors.get(name)
        if executor is None:
            known = ", ".join(sorted(self.executors)) or "none"
            raise SpecError(f"executor {name!r} is not configured (configured: {known}); add it to c.Hetflow.executors")
        return name, read_executor_options(executor.kind, executor.options, spec.options)

    async def submit(self, spec: TaskSpec, payload: bytes, listener: Listener | None = None) -> tuple[Task, bool]:
        """Validate, then serve from the cache or create and queue the task. Returns (task, from_cache)."""
        executor, options = self._executor_for(spec)
        key = cache_key(spec, executor, options)
        if spec.cache:
            cached = self.store.find_cached(key)
            if cached is not None:
                self.store.add_event(cached, "served from the cache")
                return cached, True
        task = Task(
            id=uuid.uuid4().hex[:12],
            name=spec.name,
            state=State.PENDING,
            executor=executor,
            options=options,
            code=spec.code,
            inputs=spec.inputs,
            outputs=spec.outputs,
            notebook=spec.notebook,
            cell_id=spec.cell_id,
            retries=spec.retries,
            timeout=spec.timeout,
            cache_key=key,
            payload_hash=self.store.put_blob(payload),
            created=time.time(),
        )
        if listener is not None:
            self.events.subscribe(listener, task.id)
        await self.scheduler.add(task, payload)
        return task, False

    def find(self, ref: str) -> Task:
        """A task by id, or the newest task of that name."""
        task = self.store.get_task(ref)
        if task is None:
            named = self.store.find_tasks(name=ref, limit=1)
            task = named[0] if named else None
        if task is None:
            raise SpecError(f"no task has the id or name {ref!r}; %remote status lists them")
        return task

    def tasks(
        self, notebook: str | None = None, states: list[State] | None = None, limit: int | None = None
    ) -> list[Task]:
        return self.store.find_tasks(notebook=notebook, states=states, limit=limit)

    def history(self, ref: str) -> list[dict[str, Any]]:
        return self.store.events(self.find(ref).id)

    async def cancel(self, ref: str) -> Task:
        return await self.scheduler.cancel(self.find(ref))

    async def retry(self, ref: str) -> Task:
        """Run a failed or cancelled task again."""
        task = self.find(ref)
        if task.state not in (State.FAILED, State.CANCELLED):
            raise SpecError(f"task {task.name!r} is {task.state.value}; only a failed or cancelled task is retried")
        return await self.scheduler.rerun(task, "retried by the user")

    async def rerun(self, ref: str) -> Task:
        """Run a finished task again whatever its outcome, bypassing the cache."""
        task = self.find(ref)
        if not task.state.final:
            raise SpecError(f"task {task.name!r} is {task.state.value}; it can be re-run once it has ended")
        return await self.scheduler.rerun(task, "re-run by the user")

    def result(self, ref: str) -> tuple[Task, bytes]:
        task = self.find(ref)
        if task.state is not State.COMPLETED or not task.result_hash:
            raise SpecError(f"task {task.name!r} is {task.state.value}; it has no result")
        return task, self.store.get_blob(task.result_hash)

    def logs(self, ref: str, offset: int = 0, limit: int | None = None) -> bytes:
        """A byte range of the task's (masked) log."""
        path = self.store.log_path(self.find(ref).id)
        try:
            with open(path, "rb") as fh:
                fh.seek(offset)
                return fh.read(-1 if limit is None else limit)
        except FileNotFoundError:
            return b""

    def graph(self, notebook: str | None = None) -> dict[str, Any]:
        tasks = self.tasks(notebook=notebook)
        ids = {t.id for t in tasks}
        return {
            "nodes": [t.to_json() for t in tasks],
            "edges": [{"source": dep, "target": t.id} for t in tasks for dep in t.deps if dep in ids],
        }

    def describe_executors(self) -> dict[str, dict[str, Any]]:
        return {name: executor.describe() for name, executor in self.executors.items()}


def cache_key(spec: TaskSpec, executor: str, options: dict[str, Any]) -> str:
    """Same code, same inputs, same outputs asked for, same executor and options: same result."""
    material = {
        "code": spec.code,
        "inputs": spec.inputs,
        "outputs": spec.outputs,
        "executor": executor,
        "options": options,
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()
