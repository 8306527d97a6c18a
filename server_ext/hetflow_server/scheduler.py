"""Moves tasks through their states: hands them to executors, retries with backoff, enforces timeouts, cancels,
and picks up after an engine restart."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import IO, Any

from .credentials import Credentials, StreamMasker
from .events import Events
from .executors import Executor, Job
from .models import State, Task
from .settings import Hetflow
from .store import Store, StoreError

INLINE_RESULT = 256 * 1024


class _TaskLog:
    """The store's copy of a task's output: masked, appended as it streams in."""

    def __init__(self, path: Path, credentials: Credentials):
        self.masker = StreamMasker(credentials)
        self._file: IO[bytes] = open(path, "ab")  # noqa: SIM115 - open while the task runs
        self.size = self._file.tell()

    def write(self, text: str) -> tuple[int, str]:
        """Append; returns the byte offset where the shown (masked) text starts, and the text."""
        return self._append(self.masker.feed(text))

    def close(self) -> tuple[int, str]:
        offset, rest = self._append(self.masker.close())
        self._file.close()
        return offset, rest

    def _append(self, text: str) -> tuple[int, str]:
        offset = self.size
        data = text.encode("utf-8")
        self._file.write(data)
        self._file.flush()
        self.size += len(data)
        return offset, text


class Scheduler:
    """The executors' reporter. Every transition is persisted (with its event row) before it is announced."""

    def __init__(
        self, store: Store, events: Events, executors: dict[str, Executor], settings: Hetflow, credentials: Credentials
    ):
        self.store, self.events, self.executors, self.settings = store, events, executors, settings
        self.credentials = credentials
        self._live: dict[str, Task] = {}
        self._logs: dict[str, _TaskLog] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._background: set[asyncio.Task[None]] = set()

    def later(self, task_id: str, delay: float, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run `work` after `delay` seconds unless the task's timer is cleared first (cancel, completion)."""

        self._clear_timer(task_id)  # one timer per task: a stale timeout must not stop a new attempt

        def fire() -> None:
            job = asyncio.get_running_loop().create_task(work())
            self._background.add(job)
            job.add_done_callback(self._background.discard)

        self._timers[task_id] = asyncio.get_running_loop().call_later(delay, fire)

    def announce(self, task: Task, message: str | None = None, **extra: Any) -> None:
        self.events.publish(
            {
                "type": "task",
                "task": task.id,
                "state": task.state.value,
                "message": message,
                "data": task.to_json(),
                **extra,
            }
        )

    def move(self, task: Task, state: State, message: str | None = None, *changed: str, **extra: Any) -> None:
        if state.final:
            self._close_log(task.id)
        self.store.transition(task, state, message, *changed)
        self.announce(task, message, **extra)
        if state.final:
            self._live.pop(task.id, None)
            self._clear_timer(task.id)
            self.events.forget(task.id)

    async def add(self, task: Task, payload: bytes) -> None:
        """A new task: stored with its pending and queued events in one transaction, then handed on."""
        self._live[task.id] = task
        task.state, task.attempts = State.QUEUED, 1
        self.store.insert_task(task, State.PENDING, State.QUEUED)
        self.announce(task)
        await self._submit(task, payload)

    async def enqueue(self, task: Task) -> None:
        self._live[task.id] = task
        task.attempts += 1
        task.handle = None  # a new attempt: the last one's job is no longer this task's
        self.move(task, State.QUEUED, None, "attempts", "handle")
        try:
            payload = self.store.get_blob(task.payload_hash or "")
        except StoreError as err:
            self._fail(task, {"type": "StoreError", "message": str(err)})
            return
        await self._submit(task, payload)

    async def _submit(self, task: Task, payload: bytes) -> None:
        job = Job(task.id, payload, task.options)
        try:
            await self.executors[task.executor].submit([job])
        except Exception as err:
            self.finished(task.id, None, {"type": type(err).__name__, "message": f"submission failed: {err}"})

    async def recover(self, task: Task) -> None:
        """A task the previous engine left unfinished: follow it if it runs, queue it again if it never did."""
        self._live[task.id] = task
        executor = self.executors.get(task.executor)
        if executor is None:
            error = {"type": "ExecutorGone", "message": f"executor {task.executor!r} is no longer configured"}
            self._fail(task, error)
        elif task.state is State.RUNNING or task.handle:  # running, or queued in a remote system
            self.store.add_event(task, "the engine restarted; re-attaching")
            await executor.reattach(task.id, task.handle or {})
            if task.timeout and task.started:
                remaining = max(0.0, task.timeout - (time.time() - task.started))
                self.later(task.id, remaining, lambda: self._expire(task))
        else:
            if task.state is State.QUEUED:
                task.attempts -= 1  # it never started
            await self.enqueue(task)

    # --------------------------------------------------------------------------- reporter

    def submitted(self, task_id: str, handle: dict[str, Any]) -> None:
        task = self._live.get(task_id)
        if task is None or task.state.final:
            return
        task.handle = handle
        self.store.update_task(task, "handle")
        self.store.add_event(task, f"submitted: {', '.join(f'{k} {v}' for k, v in handle.items())}")

    def started(self, task_id: str, handle: dict[str, Any]) -> None:
        task = self._live.get(task_id)
        if task is None or task.state is not State.QUEUED:
            return
        task.started, task.handle = time.time(), handle
        self.move(task, State.RUNNING, None, "started", "handle")
        if task.timeout:
            self.later(task_id, task.timeout, lambda: self._expire(task))

    def log(self, task_id: str, stream: str, text: str) -> None:
        if task_id not in self._live:
            return
        log = self._logs.get(task_id)
        if log is None:
            log = self._logs[task_id] = _TaskLog(self.store.log_path(task_id), self.credentials)
        self._publish_log(task_id, stream, *log.write(text))

    def _publish_log(self, task_id: str, stream: str, offset: int, text: str) -> None:
        """Log events carry their byte offset in the task's log, so a client that reconnects resumes exactly."""
        if text:
            self.events.publish({"type": "log", "task": task_id, "stream": stream, "text": text, "offset": offset})

    def _close_log(self, task_id: str) -> None:
        log = self._logs.pop(task_id, None)
        if log is not None:
            self._publish_log(task_id, "stdout", *log.close())

    def finished(self, task_id: str, result: bytes | Path | None, error: dict[str, str] | None) -> None:
        task = self._live.get(task_id)
        if task is None or task.state.final:
            return  # cancelled meanwhile: a late report changes nothing
        self._clear_timer(task_id)
        if error is None and result is not None:
            if isinstance(result, Path):
                task.result_hash, result = self.store.adopt_blob(result)
            else:
                task.result_hash = self.store.put_blob(result)
            task.error, task.finished = None, time.time()
            # small results ride along with the event, so a waiting kernel need not fetch them
            inline = {"result": result} if len(result) <= INLINE_RESULT else {}
            self.move(task, State.COMPLETED, None, "result_hash", "error", "finished", **inline)
            return
        error = error or {"type": "Error", "message": "the executor returned no result"}
        masked = {key: self.credentials.mask(str(value)) for key, value in error.items()}
        if task.attempts <= task.retries:
            delay = min(self.settings.retry_backoff * 2 ** (task.attempts - 1), self.settings.retry_backoff_max)
            task.error = masked
            reason = f"{masked['type']}: {masked['message']}"
            self.move(
                task, State.PENDING, f"attempt {task.attempts} failed ({reason}); retrying in {delay:g} s", "error"
            )
            self.later(task_id, delay, lambda: self.enqueue(task))
        else:
            self._fail(task, masked)

    def lost(self, task_id: str, reason: str) -> None:
        """Its process died with the previous engine: run it again, once; a second loss fails it."""
        task = self._live.get(task_id)
        if task is None or task.state.final:
            return
        if task.restarts >= 1:
            self._fail(task, {"type": "WorkerLost", "message": f"lost again after a re-run: {reason}"})
            return
        task.restarts += 1
        self.move(task, State.PENDING, f"re-running once: {reason}", "restarts")
        self.later(task_id, 0, lambda: self.enqueue(task))

    def _fail(self, task: Task, error: dict[str, str]) -> None:
        task.error, task.finished = error, time.time()
        self.move(task, State.FAILED, f"{error['type']}: {error['message']}", "error", "finished")

    # --------------------------------------------------------------------------- control

    async def _expire(self, task: Task) -> None:
        if task.state is not State.RUNNING:
            return
        with contextlib.suppress(Exception):  # the task fails for its timeout all the same
            await self.executors[task.executor].cancel(task.id)
        self.finished(
            task.id,
            None,
            {"type": "TimeoutError", "message": f"the task ran longer than timeout={task.timeout:g} s and was stopped"},
        )

    async def cancel(self, task: Task) -> Task:
        live = self._live.get(task.id, task)
        if live.state.final:
            return live
        self._clear_timer(live.id)
        message = "cancelled by the user"
        if live.state in (State.QUEUED, State.RUNNING):
            try:
                await self.executors[live.executor].cancel(live.id)
            except Exception as err:  # the task is cancelled for us all the same; say what may still run
                message += f" (stopping it on {live.executor} failed: {err})"
        live.finished = time.time()
        self.move(live, State.CANCELLED, message, "finished")
        return live

    async def rerun(self, task: Task, message: str) -> Task:
        """Run a finished task again under the same id (its new result replaces the old)."""
        if not task.state.final:
            return self._live.get(task.id, task)
        task.error, task.finished, task.started, task.restarts, task.attempts = None, None, None, 0, 0
        self.move(task, State.PENDING, message, "error", "finished", "started", "restarts")
        await self.enqueue(task)
        return task

    def _clear_timer(self, task_id: str) -> None:
        timer = self._timers.pop(task_id, None)
        if timer is not None:
            timer.cancel()
