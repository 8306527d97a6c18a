"""Moves tasks through their states: hands them to executors, retries with backoff, enforces timeouts, cancels."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

from .events import Events
from .executors import Executor, Job
from .models import State, Task
from .settings import Hetflow
from .store import Store


class Scheduler:
    """The executors' reporter. Every transition is persisted (with its event row) before it is announced."""

    def __init__(self, store: Store, events: Events, executors: dict[str, Executor], settings: Hetflow):
        self.store, self.events, self.executors, self.settings = store, events, executors, settings
        self._live: dict[str, Task] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._background: set[asyncio.Task[None]] = set()

    def later(self, task_id: str, delay: float, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run `work` after `delay` seconds unless the task's timer is cleared first (cancel, completion)."""

        def fire() -> None:
            job = asyncio.get_running_loop().create_task(work())
            self._background.add(job)
            job.add_done_callback(self._background.discard)

        self._timers[task_id] = asyncio.get_running_loop().call_later(delay, fire)

    def move(self, task: Task, state: State, message: str | None = None, *changed: str) -> None:
        self.store.transition(task, state, message, *changed)
        self.events.publish(
            {
                "type": "task",
                "task": task.id,
                "state": state.value,
                "message": message,
                "data": task.to_json(),
            }
        )
        if state.final:
            self._live.pop(task.id, None)
            self._clear_timer(task.id)
            self.events.forget(task.id)

    async def enqueue(self, task: Task) -> None:
        self._live[task.id] = task
        task.attempts += 1
        self.move(task, State.QUEUED, None, "attempts")
        job = Job(task.id, self.store.get_blob(task.payload_hash or ""), task.options, self.store.log_path(task.id))
        try:
            await self.executors[task.executor].submit([job])
        except Exception as err:
            self.finished(task.id, None, {"type": type(err).__name__, "message": f"submission failed: {err}"})

    # --------------------------------------------------------------------------- reporter

    def started(self, task_id: str, handle: dict[str, Any]) -> None:
        task = self._live.get(task_id)
        if task is None or task.state is not State.QUEUED:
            return
        task.started, task.handle = time.time(), handle
        self.move(task, State.RUNNING, None, "started", "handle")
        if task.timeout:
            self.later(task_id, task.timeout, lambda: self._expire(task))

    def log(self, task_id: str, stream: str, text: str) -> None:
        self.events.publish({"type": "log", "task": task_id, "stream": stream, "text": text})

    def finished(self, task_id: str, result: bytes | None, error: dict[str, str] | None) -> None:
        task = self._live.get(task_id)
        if task is None or task.state.final:
            return  # cancelled meanwhile: a late report changes nothing
        self._clear_timer(task_id)
        task.finished = time.time()
        if error is None and result is not None:
            task.result_hash = self.store.put_blob(result)
            task.error = None
            self.move(task, State.COMPLETED, None, "result_hash", "error", "finished")
            return
        task.error = error or {"type": "Error", "message": "the executor returned no result"}
        reason = f"{task.error['type']}: {task.error['message']}"
        if task.attempts <= task.retries:
            delay = min(self.settings.retry_backoff * 2 ** (task.attempts - 1), self.settings.retry_backoff_max)
            self.move(
                task,
                State.PENDING,
                f"attempt {task.attempts} failed ({reason}); retrying in {delay:g} s",
                "error",
                "finished",
            )
            self.later(task_id, delay, lambda: self.enqueue(task))
        else:
            self.move(task, State.FAILED, reason, "error", "finished")

    # --------------------------------------------------------------------------- control

    async def _expire(self, task: Task) -> None:
        if task.state is not State.RUNNING:
            return
        await self.executors[task.executor].cancel(task.id)
        self.finished(
            task.id,
            None,
            {
                "type": "TimeoutError",
                "message": f"the task ran longer than timeout={task.timeout:g} s and was stopped",
                "traceback": "",
            },
        )

    async def cancel(self, task: Task) -> Task:
        live = self._live.get(task.id, task)
        if live.state.final:
            return live
        self._clear_timer(live.id)
        if live.state in (State.QUEUED, State.RUNNING):
            await self.executors[live.executor].cancel(live.id)
        live.finished = time.time()
        self.move(live, State.CANCELLED, "cancelled by the user", "finished")
        return live

    def _clear_timer(self, task_id: str) -> None:
        timer = self._timers.pop(task_id, None)
        if timer is not None:
            timer.cancel()
