"""Moves tasks through their states: admits new tasks, hands ready ones to executors in batches, takes the
executors' reports, retries with backoff, enforces timeouts, cancels (and cancels what depended on a failure),
re-runs, and picks up after an engine restart.

What it asks along the way has owners of its own: the dependency graph (dependencies.py), the blobs a job needs
and the results it leaves (results.py), and the tasks' log files (tasklogs.py). This file keeps the one rule they
all serve: every transition is persisted (with its event row) before it is announced.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator
from typing import Any

from .credentials import Credentials
from .dependencies import Dependencies
from .events import Events
from .executors import Executor, KeptResult
from .models import State, Task
from .protocol import ResultGone
from .results import Results
from .settings import Hetflow
from .store import Store
from .tasklogs import TaskLogs


class Scheduler:
    """The executors' reporter, and the only one that changes a task's state."""

    def __init__(
        self, store: Store, events: Events, executors: dict[str, Executor], settings: Hetflow, credentials: Credentials
    ):
        self.store, self.events, self.executors, self.settings = store, events, executors, settings
        self.credentials = credentials
        self._live: dict[str, Task] = {}  # every unfinished task
        self._dependencies = Dependencies(store, self._live)
        self.results = Results(store, executors, self.lookup)
        self._logs = TaskLogs(store, credentials, self._publish)
        # The hand-over queue: executor name -> the tasks made ready (queued) for it since the last hand-over, in
        # the order they became ready. `add` and `_make_ready` fill it and ask for one `_hand_over` at the next
        # turn of the event loop (`_handing_over` says one is asked for); that drains all of it, so that the
        # tasks made ready in one turn (a foreach, the dependents one completion releases) reach their executor
        # in one `submit`: packing, one sbatch or round trip for many tasks.
        self._ready: dict[str, list[Task]] = {}
        self._handing_over = False
        self._held: list[Callable[[], None]] | None = None  # announcements held until the batch is committed
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._starting: dict[str, Task] = {}  # started, not stored yet: see `started`
        self._starts_timer: asyncio.TimerHandle | None = None
        self._background: set[asyncio.Task[object]] = set()

    def lookup(self, task_id: str) -> Task | None:
        return self._live.get(task_id) or self.store.get_task(task_id)

    # --------------------------------------------------------------------------- transitions

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Many reports in one commit (an executor that learns of many tasks at once): the announcements wait
        for it, so that nothing is announced before it is stored."""
        if self._held is not None:
            yield
            return
        self._held = []
        try:
            with self.store.transaction():
                yield
        finally:
            held, self._held = self._held, None
        for announce in held:
            announce()

    def _say(self, announce: Callable[[], None]) -> None:
        """Announce now, or once the batch being stored is committed."""
        if self._held is None:
            announce()
        else:
            self._held.append(announce)

    def announce(self, task: Task, message: str | None = None, **extra: Any) -> None:
        self._publish(
            {
                "type": "task",
                "task": task.id,
                "state": task.state.value,
                "message": message,
                "data": task.to_json(),
                **extra,
            }
        )

    def _publish(self, event: dict[str, Any]) -> None:
        self._say(functools.partial(self.events.publish, event))

    def move(self, task: Task, state: State, message: str | None = None, *changed: str, **extra: Any) -> None:
        self.move_many([task], state, message, *changed, **extra)

    def move_many(self, tasks: list[Task], state: State, message: str | None, *changed: str, **extra: Any) -> None:
        if not tasks:
            return
        if state.final:
            for task in tasks:
                self._logs.close(task.id)
        self.store.transition_many(tasks, state, message, *changed)
        for task in tasks:
            self.announce(task, message, **extra)
            if state.final:
                self._live.pop(task.id, None)
                self._clear_timer(task.id)
                self._say(functools.partial(self.events.forget, task.id))  # after its last word
            else:
                self._live[task.id] = task

    # --------------------------------------------------------------------------- admission

    async def add(self, tasks: list[Task], blobs: dict[str, bytes]) -> None:
        """New tasks (one cell, or every element of a foreach): stored with their first events in one
        transaction, then the ready ones handed over together."""
        rows: list[tuple[Task, list[State], str | None]] = []
        known: dict[str, Task | None] = {}
        waits: list[tuple[Task, list[str]]] = []
        now = time.time()
        for task in tasks:
            if task.state is State.COMPLETED:  # an element served from the cache
                task.finished = now
                rows.append((task, [State.COMPLETED], "served from the cache"))
                continue
            waiting, reason = self._dependencies.blockers(task, known)
            if reason:
                task.state, task.finished = State.CANCELLED, now
                task.error = {"type": "UpstreamFailed", "message": reason}
                rows.append((task, [State.PENDING, State.CANCELLED], reason))
            elif waiting:
                waits.append((task, waiting))
                rows.append((task, [State.PENDING], f"waiting for {len(waiting)} upstream task(s)"))
            else:
                task.state, task.attempts = State.QUEUED, 1
                rows.append((task, [State.PENDING, State.QUEUED], None))
        self.store.insert_tasks(rows, blobs.values())  # stored first: a task nothing could store never runs
        self.results.hold(blobs)
        for task, waiting in waits:
            self._wait_for(task, waiting)
        for task, _, _ in rows:
            if task.state is State.QUEUED:
                self._live[task.id] = task
                self._ready.setdefault(task.executor, []).append(task)
        for task, _, message in rows:
            self.announce(task, message)
            if task.state.final:
                self._say(functools.partial(self.events.forget, task.id))
        self._hand_over_soon()

    async def recover(self, task: Task) -> None:
        """A task the previous engine left unfinished: re-attach to it if it runs, queue it again if it never did."""
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
            self._admit([task])

    def _admit(self, tasks: Iterable[Task]) -> None:
        """Pending tasks: ready, waiting for upstream tasks, or cancelled because one failed."""
        ready: list[Task] = []
        known: dict[str, Task | None] = {}
        for task in tasks:
            waiting, reason = self._dependencies.blockers(task, known)
            if reason:
                self._end_unrun([task], reason)
            elif waiting:
                self._wait_for(task, waiting)
            else:
                ready.append(task)
        self._make_ready(ready)

    def _wait_for(self, task: Task, upstream: list[str]) -> None:
        task.state = State.PENDING
        self._live[task.id] = task
        self._dependencies.wait(task.id, upstream)

    def _make_ready(self, tasks: list[Task]) -> None:
        for task in tasks:
            task.attempts += 1
            task.handle = None  # a new attempt: the last one's job is no longer this task's
        self.move_many(tasks, State.QUEUED, None, "attempts", "handle")
        for task in tasks:
            self._ready.setdefault(task.executor, []).append(task)
        self._hand_over_soon()

    async def enqueue(self, task: Task) -> None:
        if self._live.get(task.id) is task and task.state is State.PENDING:  # not cancelled meanwhile
            self._make_ready([task])

    def _hand_over_soon(self) -> None:
        """Tasks made ready in one turn of the loop go to their executor in one call (packing)."""
        if self._ready and not self._handing_over:
            self._handing_over = True
            asyncio.get_running_loop().call_soon(lambda: self.in_background(self._hand_over()))

    async def _hand_over(self) -> None:
        self._handing_over = False
        ready, self._ready = self._ready, {}
        for name, tasks in ready.items():
            jobs = []
            for task in tasks:
                if task.state is not State.QUEUED:  # cancelled meanwhile
                    continue
                try:
                    jobs.append(await self.results.job(task))
                except ResultGone as gone:  # an upstream result kept elsewhere was purged: that task runs again
                    self.gone(task.id, gone)
                except Exception as err:  # its inputs cannot be had: it fails, the others go on
                    self._fail(task, {"type": type(err).__name__, "message": str(err)})
            jobs = [job for job in jobs if self._live.get(job.task_id) is not None]  # cancelled while we waited
            if not jobs:
                continue
            try:
                await self.executors[name].submit(jobs)
            except Exception as err:
                error = {"type": type(err).__name__, "message": f"submission failed: {err}"}
                for job in jobs:
                    self.finished(job.task_id, None, error)
        self.results.drop_held()

    # --------------------------------------------------------------------------- reporter

    def submitted(self, task_id: str, handle: dict[str, Any]) -> None:
        task = self._live.get(task_id)
        if task is None or task.state.final:
            return
        task.handle = handle
        self.store.update_task(task, "handle")
        self.store.add_event(task, f"submitted: {', '.join(f'{k} {v}' for k, v in handle.items())}")

    def started(self, task_id: str, handle: dict[str, Any]) -> None:
        """A start is stored (and announced) STARTED_GRACE later, or with the task's end if that comes first: a
        task of a tight loop then costs one commit for its start and end, not two."""
        task = self._live.get(task_id)
        if task is None or task.state is not State.QUEUED or task_id in self._starting:
            return
        task.started, task.handle = time.time(), handle
        if self._starts_timer is None:
            self._starts_timer = asyncio.get_running_loop().call_later(STARTED_GRACE, self._store_starts)
        self._starting[task_id] = task
        if task.timeout:
            self.later(task_id, task.timeout, lambda: self._expire(task))

    def _store_starts(self) -> None:
        starting, self._starting, self._starts_timer = list(self._starting.values()), {}, None
        starts = [t for t in starting if self._live.get(t.id) is t and t.state is State.QUEUED]
        if starts:
            with self.batch():
                self.move_many(starts, *_RUNNING)

    def close(self) -> None:
        """Store what waits to be stored, and stop the timers (the store closes next)."""
        if self._starts_timer is not None:
            self._starts_timer.cancel()
            self._store_starts()
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    def _store_start(self, task: Task) -> None:
        """The task's start, if it waits to be stored: now, before what comes after it."""
        if self._starting.pop(task.id, None) is task and task.state is State.QUEUED:
            self.move(task, *_RUNNING)

    def log(self, task_id: str, stream: str, text: str) -> None:
        if task_id in self._live:
            self._logs.write(task_id, stream, text)

    def finished(self, task_id: str, result: bytes | KeptResult | None, error: dict[str, str] | None) -> None:
        task = self._live.get(task_id)
        if task is None or task.state.final:
            return  # cancelled meanwhile: a late report changes nothing
        self._clear_timer(task_id)
        with self.batch():  # its start, the result (a small one is a row) and the state change in one commit
            self._store_start(task)
            self._finish(task, result, error)

    def _finish(self, task: Task, result: bytes | KeptResult | None, error: dict[str, str] | None) -> None:
        if error is None and result is not None:
            inline = self.results.record(task, result)
            task.error, task.finished = None, time.time()
            self.move(task, State.COMPLETED, None, "result_hash", "error", "finished", **inline)
            self._release(task)
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
            self.later(task.id, delay, lambda: self.enqueue(task))
        else:
            self._fail(task, masked)

    def secrets(self) -> list[str]:
        return self.credentials.secret_values()

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

    def gone(self, task_id: str, gone: ResultGone) -> None:
        """Upstream results the task reads were kept where they were computed and are gone (a scratch purge): the
        tasks that computed them run again, then this one; a second time, it fails."""
        task = self._live.get(task_id)
        if task is None or task.state.final:
            return
        upstream = [found for found in map(self.lookup, gone.tasks) if found is not None]
        if task.restarts >= 1 or not upstream:
            self._fail(task, {"type": "ResultGone", "message": str(gone)})
            return
        task.restarts += 1
        labels = ", ".join(t.label for t in upstream)
        self.move(task, State.PENDING, f"{gone}; running {labels} again first", "restarts")
        self._wait_for(task, [t.id for t in upstream])
        self.in_background(self.rerun(upstream, f"its result is gone ({gone}); running it again for {task.label}"))

    def _fail(self, task: Task, error: dict[str, str]) -> None:
        task.error, task.finished = error, time.time()
        self.move(task, State.FAILED, f"{error['type']}: {error['message']}", "error", "finished")
        self._cascade(task, f"upstream {task.label} failed")

    # --------------------------------------------------------------------------- what an outcome reaches

    def _release(self, task: Task) -> None:
        """A task completed: start what waited only for it, and re-run completed dependents it changed."""
        waiting = (self._live.get(waiting_id) for waiting_id in self._dependencies.released(task.id))
        # a generator, read as _admit goes: one that an earlier one's cancellation also cancelled is skipped
        self._admit(w for w in waiting if w is not None and w.state is State.PENDING)
        stale = self._dependencies.stale(task)
        if stale:
            self.in_background(self.rerun(stale, f"upstream {task.label} changed"))

    def _cascade(self, task: Task, reason: str) -> None:
        """Everything that waits (directly or not) for a task that will not complete ends cancelled, unrun."""
        self._end_unrun(self._dependencies.doomed(task.id), reason)

    def _end_unrun(self, tasks: list[Task], reason: str) -> None:
        now = time.time()
        for task in tasks:
            task.finished, task.error = now, {"type": "UpstreamFailed", "message": reason}
        self.move_many(tasks, State.CANCELLED, reason, "finished", "error")
        for task in tasks:
            self._cascade(task, reason)

    # --------------------------------------------------------------------------- control

    async def cancel(self, task: Task) -> Task:
        live = self._live.get(task.id, task)
        if live.state.final:
            return live
        self._clear_timer(live.id)
        message = "cancelled by the user"
        if live.state in (State.QUEUED, State.RUNNING):
            try:
                note = await self.executors[live.executor].cancel(live.id)
                message += f" ({note})" if note else ""
            except Exception as err:  # the task is cancelled for us all the same; say what may still run
                message += f" (stopping it on {live.executor} failed: {err})"
        live.finished, live.error = time.time(), {"type": "Cancelled", "message": message}
        self.move(live, State.CANCELLED, message, "finished", "error")
        self._cascade(live, f"upstream {live.label} was cancelled")
        return live

    async def rerun(self, tasks: list[Task], message: str) -> list[Task]:
        """Run finished tasks again under their ids (new results replace the old), then what depends on them:
        dependents that did not complete run again after them; completed ones only if an input changed."""
        roots = [self._live.get(t.id, t) for t in tasks]
        roots = [t for t in roots if t.state.final]
        again = self._dependencies.rerun(roots)
        for task in again.values():
            task.error, task.finished, task.started, task.restarts, task.attempts = None, None, None, 0, 0
        root_ids = {t.id for t in roots}
        self.move_many([t for t in again.values() if t.id in root_ids], State.PENDING, message, *_RESET)
        dependents = [t for t in again.values() if t.id not in root_ids]
        self.move_many(dependents, State.PENDING, "waiting for a re-run upstream task", *_RESET)
        self._admit(sorted(again.values(), key=lambda t: t.created))
        return list(again.values())

    # --------------------------------------------------------------------------- timers

    def in_background(self, work: Coroutine[Any, Any, object]) -> None:
        running = asyncio.get_running_loop().create_task(work)
        self._background.add(running)  # held: the loop keeps only a weak reference to its tasks
        running.add_done_callback(self._background.discard)

    def later(self, task_id: str, delay: float, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run `work` after `delay` seconds unless the task's timer is cleared first (cancel, completion)."""
        self._clear_timer(task_id)  # one timer per task: a stale timeout must not stop a new attempt
        self._timers[task_id] = asyncio.get_running_loop().call_later(delay, lambda: self.in_background(work()))

    def _clear_timer(self, task_id: str) -> None:
        timer = self._timers.pop(task_id, None)
        if timer is not None:
            timer.cancel()

    async def _expire(self, task: Task) -> None:
        self._store_start(task)
        if task.state is not State.RUNNING:
            return
        message = f"the task ran longer than timeout={task.timeout:g} s and was stopped"
        try:
            note = await self.executors[task.executor].cancel(task.id)
            message += f" ({note})" if note else ""
        except Exception as err:  # the task fails for its timeout all the same; say what may still run
            message += f" (stopping it on {task.executor} failed: {err})"
        self.finished(task.id, None, {"type": "TimeoutError", "message": message})


_RESET = ("error", "finished", "started", "restarts", "attempts")
_RUNNING = (State.RUNNING, None, "started", "handle")
STARTED_GRACE = 0.02  # seconds a start may wait to be stored with its task's end
