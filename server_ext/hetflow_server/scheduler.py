"""Moves tasks through their states: waits for dependencies, hands ready tasks to executors in batches, retries
with backoff, enforces timeouts, cancels (and cancels what depended on a failure), re-runs, and picks up after an
engine restart."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import IO, Any

from .credentials import Credentials, StreamMasker
from .events import Events
from .executors import Executor, Job, RemoteResult, Upstream
from .models import State, Task, ref_ids
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
        self._live: dict[str, Task] = {}  # every unfinished task
        self._waiting: dict[str, set[str]] = {}  # upstream id -> pending tasks that wait for it
        self._recheck: dict[str, set[str]] = {}  # upstream id -> completed dependents to re-run if its result changes
        self._ready: dict[str, list[Task]] = {}  # executor -> tasks to hand over together at the next turn
        self._blobs: dict[str, bytes] = {}  # payloads and element values of new tasks, not read back from the store
        self._handing_over = False
        self._held: list[Callable[[], None]] | None = None  # announcements held until the batch is committed
        self._logs: dict[str, _TaskLog] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._background: set[asyncio.Task[None]] = set()

    def in_background(self, work: Coroutine[Any, Any, None]) -> None:
        job = asyncio.get_running_loop().create_task(work)
        self._background.add(job)
        job.add_done_callback(self._background.discard)

    def later(self, task_id: str, delay: float, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run `work` after `delay` seconds unless the task's timer is cleared first (cancel, completion)."""
        self._clear_timer(task_id)  # one timer per task: a stale timeout must not stop a new attempt
        self._timers[task_id] = asyncio.get_running_loop().call_later(delay, lambda: self.in_background(work()))

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
                self._close_log(task.id)
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

    def lookup(self, task_id: str) -> Task | None:
        return self._live.get(task_id) or self.store.get_task(task_id)

    def _blockers(self, task: Task, known: dict[str, Task | None]) -> tuple[list[str], str | None]:
        """The dependencies still to finish, or why the task can never run (an upstream failed)."""
        unfinished = []
        for dep in task.deps:
            upstream = self._live.get(dep)
            if upstream is None:
                if dep not in known:
                    known[dep] = self.store.get_task(dep)
                upstream = known[dep]
            if upstream is None:
                return [], f"upstream task {dep} does not exist"
            if upstream.state is State.FAILED or upstream.state is State.CANCELLED:
                verb = "failed" if upstream.state is State.FAILED else "was cancelled"
                return [], f"upstream {upstream.label} {verb}"
            if upstream.state is not State.COMPLETED:
                unfinished.append(dep)
        return unfinished, None

    async def add(self, tasks: list[Task], blobs: dict[str, bytes]) -> None:
        """New tasks (one cell, or every element of a foreach): stored with their first events in one
        transaction, then the ready ones handed over together."""
        self._blobs.update(blobs)
        rows: list[tuple[Task, list[State], str | None]] = []
        known: dict[str, Task | None] = {}
        now = time.time()
        for task in tasks:
            if task.state is State.COMPLETED:  # an element served from the cache
                task.finished = now
                rows.append((task, [State.COMPLETED], "served from the cache"))
                continue
            waiting, reason = self._blockers(task, known)
            if reason:
                task.state, task.finished = State.CANCELLED, now
                task.error = {"type": "UpstreamFailed", "message": reason}
                rows.append((task, [State.PENDING, State.CANCELLED], reason))
            elif waiting:
                self._wait_for(task, waiting)
                rows.append((task, [State.PENDING], f"waiting for {len(waiting)} upstream task(s)"))
            else:
                task.state, task.attempts = State.QUEUED, 1
                self._live[task.id] = task
                self._ready.setdefault(task.executor, []).append(task)
                rows.append((task, [State.PENDING, State.QUEUED], None))
        self.store.insert_tasks(rows, blobs.values())
        for task, _, message in rows:
            self.announce(task, message)
            if task.state.final:
                self._say(functools.partial(self.events.forget, task.id))
        self._hand_over_soon()

    def _wait_for(self, task: Task, upstream: list[str]) -> None:
        task.state = State.PENDING
        self._live[task.id] = task
        for dep in upstream:
            self._waiting.setdefault(dep, set()).add(task.id)

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
                    jobs.append(await self._job(task))
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
        self._blobs.clear()

    def _blob(self, digest: str) -> bytes:
        return self._blobs.get(digest) or self.store.get_blob(digest)

    async def _job(self, task: Task) -> Job:
        refs: dict[str, Upstream | list[Upstream]] = {}
        for name, (source, output) in task.refs.items():
            found = await self._upstream(task, ref_ids(source), output)
            refs[name] = found if isinstance(source, list) else found[0]
            # what this run used: an upstream re-run with a new result re-runs this task
            task.inputs[name] = ",".join(up.result_hash for up in found)
        if refs:
            self.store.update_task(task, "inputs")
        bound = {name: self._blob(digest) for name, digest in task.bound.items()}
        return Job(task.id, self._blob(task.payload_hash or ""), task.options, bound, refs)

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
        elsewhere = [u for u in found if not (u.executor == task.executor and kept is not None and kept.holds(u.id))]
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
                if executor is None or not executor.holds(task.id):
                    raise StoreError(
                        f"the result of {task.label} was kept by the {task.executor} executor and is gone (the "
                        f"cluster or the engine restarted); %remote rerun {task.name} computes it again"
                    )
                kept.setdefault(task.executor, []).append(task)
        for name, waiting in kept.items():
            for task, data in zip(
                waiting, await self.executors[name].fetch_results([t.id for t in waiting]), strict=True
            ):
                if self.store.put_blob(data) != task.result_hash:
                    raise StoreError(f"the result of {task.label} from {task.executor} does not match its hash")
                self.store.add_event(task, f"result fetched from {task.executor} ({len(data)} bytes)")
        return [self.store.get_blob(task.result_hash or "") for task in tasks]

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
            self._admit([task])

    def _admit(self, tasks: list[Task]) -> None:
        """Pending tasks: ready, waiting for upstream tasks, or cancelled because one failed."""
        ready: list[Task] = []
        known: dict[str, Task | None] = {}
        for task in tasks:
            waiting, reason = self._blockers(task, known)
            if reason:
                self._end_unrun([task], reason)
            elif waiting:
                self._wait_for(task, waiting)
            else:
                ready.append(task)
        self._make_ready(ready)

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
            self._publish({"type": "log", "task": task_id, "stream": stream, "text": text, "offset": offset})

    def _close_log(self, task_id: str) -> None:
        log = self._logs.pop(task_id, None)
        if log is not None:
            self._publish_log(task_id, "stdout", *log.close())

    def finished(self, task_id: str, result: bytes | Path | RemoteResult | None, error: dict[str, str] | None) -> None:
        task = self._live.get(task_id)
        if task is None or task.state.final:
            return  # cancelled meanwhile: a late report changes nothing
        self._clear_timer(task_id)
        if error is None and result is not None:
            with self.batch():  # the result (a small one is a row) and the state change in one commit
                inline: dict[str, Any] = {}
                if isinstance(result, RemoteResult):
                    task.result_hash = result.digest
                else:
                    if isinstance(result, Path):
                        task.result_hash, result = self.store.adopt_blob(result)
                    else:
                        task.result_hash = self.store.put_blob(result)
                    # small results ride along with the event, so a waiting kernel need not fetch them
                    inline = {"result": result} if len(result) <= INLINE_RESULT else {}
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
        self._cascade(task, f"upstream {task.label} failed")

    # --------------------------------------------------------------------------- dependencies

    def _release(self, task: Task) -> None:
        """A task completed: start what waited only for it, and re-run completed dependents it changed."""
        ready: list[Task] = []
        known: dict[str, Task | None] = {}
        for waiting_id in sorted(self._waiting.pop(task.id, ())):
            waiting = self._live.get(waiting_id)
            if waiting is None or waiting.state is not State.PENDING:
                continue
            unfinished, reason = self._blockers(waiting, known)
            if reason:
                self._end_unrun([waiting], reason)
            elif unfinished:
                self._wait_for(waiting, unfinished)  # an upstream that runs again (a re-run) holds it still
            else:
                ready.append(waiting)
        self._make_ready(ready)
        stale = []
        for dependent_id in self._recheck.pop(task.id, ()):
            dependent = self.store.get_task(dependent_id)
            if dependent is None or dependent.state is not State.COMPLETED:
                continue
            used = [
                dependent.inputs.get(name, "").split(",")
                for name, (source, _) in dependent.refs.items()
                if task.id in ref_ids(source)
            ]
            if any(task.result_hash not in hashes for hashes in used):
                stale.append(dependent)
        if stale:
            self.in_background(self.rerun(stale, f"upstream {task.label} changed"))

    def _cascade(self, task: Task, reason: str) -> None:
        """Everything that waits (directly or not) for a task that will not complete ends cancelled, unrun."""
        doomed, frontier = [], [task.id]
        while frontier:
            for waiting_id in sorted(self._waiting.pop(frontier.pop(), ())):
                waiting = self._live.get(waiting_id)
                if waiting is not None and waiting.state is State.PENDING and waiting not in doomed:
                    doomed.append(waiting)
                    frontier.append(waiting_id)
        self._end_unrun(doomed, reason)

    def _end_unrun(self, tasks: list[Task], reason: str) -> None:
        now = time.time()
        for task in tasks:
            task.finished, task.error = now, {"type": "UpstreamFailed", "message": reason}
        self.move_many(tasks, State.CANCELLED, reason, "finished", "error")
        for task in tasks:
            self._cascade(task, reason)

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
        live.finished, live.error = time.time(), {"type": "Cancelled", "message": message}
        self.move(live, State.CANCELLED, message, "finished", "error")
        self._cascade(live, f"upstream {live.label} was cancelled")
        return live

    async def rerun(self, tasks: list[Task], message: str) -> list[Task]:
        """Run finished tasks again under their ids (new results replace the old), then what depends on them:
        dependents that did not complete run again after them; completed ones only if an input changed."""
        roots = [self._live.get(t.id, t) for t in tasks]
        roots = [t for t in roots if t.state.final]
        again: dict[str, Task] = {t.id: t for t in roots}
        frontier = list(roots)
        while frontier:
            upstream = frontier.pop()
            for dependent in self.store.dependents(upstream.id):
                live = self._live.get(dependent.id)
                if live is not None and live.state is State.PENDING and upstream.id in live.deps:
                    self._wait_for(live, [upstream.id])  # it waits for the re-run too
                if dependent.id in again or live is not None:
                    continue
                if dependent.state is State.COMPLETED:
                    self._recheck.setdefault(upstream.id, set()).add(dependent.id)
                else:
                    again[dependent.id] = dependent
                    frontier.append(dependent)
        for task in again.values():
            task.error, task.finished, task.started, task.restarts, task.attempts = None, None, None, 0, 0
        root_ids = {t.id for t in roots}
        self.move_many([t for t in again.values() if t.id in root_ids], State.PENDING, message, *_RESET)
        dependents = [t for t in again.values() if t.id not in root_ids]
        self.move_many(dependents, State.PENDING, "waiting for a re-run upstream task", *_RESET)
        self._admit(sorted(again.values(), key=lambda t: t.created))
        return list(again.values())

    def _clear_timer(self, task_id: str) -> None:
        timer = self._timers.pop(task_id, None)
        if timer is not None:
            timer.cancel()


_RESET = ("error", "finished", "started", "restarts", "attempts")
