"""The engine: store, scheduler, executors and events behind one async API (used by handlers and kernels)."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from typing import Any

from .events import Events, Listener
from .executors import Executor, executor_class
from .models import SpecError, State, Task, TaskSpec, read_executor_options
from .scheduler import Scheduler
from .settings import Hetflow
from .store import Store


class Engine:
    def __init__(self, settings: Hetflow):
        self.settings = settings
        self.events = Events()
        self.store: Store | None = None
        self.executors: dict[str, Executor] = {}
        self.scheduler: Scheduler | None = None

    async def start(self) -> None:
        store = Store(self.settings.store_path)
        store.acquire()
        self.store = store
        self.scheduler = Scheduler(store, self.events, self.executors, self.settings)
        for name, config in self.settings.executors.items():
            if "kind" not in config:
                raise SpecError(f"executor {name!r} has no 'kind' in c.Hetflow.executors")
            self.executors[name] = executor_class(config["kind"])(name, self.scheduler, **config)
        for executor in self.executors.values():
            await executor.start()
        self._abandon_unfinished()

    def _abandon_unfinished(self) -> None:
        """Tasks a previous engine left running cannot be re-attached yet: say so instead of showing them live."""
        assert self.scheduler and self.store
        for task in self.store.find_tasks(states=[State.PENDING, State.QUEUED, State.RUNNING]):
            task.finished = time.time()
            task.error = {
                "type": "EngineStopped",
                "message": "the engine stopped before the task finished; run the cell again",
            }
            self.scheduler.move(task, State.FAILED, task.error["message"], "error", "finished")

    async def close(self) -> None:
        for executor in self.executors.values():
            await executor.close()
        if self.store:
            self.store.close()

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
        assert self.store and self.scheduler
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
        self.store.insert_task(task)
        if listener is not None:
            self.events.subscribe(listener, task.id)
        await self.scheduler.enqueue(task)
        return task, False

    def find(self, ref: str) -> Task:
        """A task by id, or the newest task of that name."""
        assert self.store
        task = self.store.get_task(ref)
        if task is None:
            named = self.store.find_tasks(name=ref, limit=1)
            task = named[0] if named else None
        if task is None:
            raise SpecError(f"no task has the id or name {ref!r}; %remote status lists them")
        return task

    def tasks(self, limit: int | None = None) -> list[Task]:
        assert self.store
        return self.store.find_tasks(limit=limit)

    async def cancel(self, ref: str) -> Task:
        assert self.scheduler
        return await self.scheduler.cancel(self.find(ref))

    def logs(self, ref: str, offset: int = 0) -> str:
        assert self.store
        path = self.store.log_path(self.find(ref).id)
        try:
            with open(path, "rb") as fh:
                fh.seek(offset)
                return fh.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""

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
