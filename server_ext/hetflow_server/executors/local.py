"""`local`: a pool of warm worker processes on this machine, fed over pipes (no interpreter start per task).

Ready tasks go to a free worker in packs (one pipe message for many small tasks, sized so that every free worker
gets a share); a worker runs its pack one task after the other. A cancelled task that has not started in its pack
still runs there, its outcome ignored: only the running task is killed.

Workers run in sessions of their own: a kernel interrupt never reaches them, and a task outlives an engine that
dies. Each outcome is appended to the worker's journal in the spool (`worker-PID.journal`, one write per task, no
file per task) before it is sent, so a restarted engine re-attaches to a still-running worker by its pid and picks
the outcome up from there. Once a worker's outcomes are committed and it is idle, the engine empties its journal,
then hands it its next pack.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import pickle
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from traitlets import Int

from ..runner import frames, journal_path
from ..shipping import HEADER, JobPaths, envelope, pickled, spooled_outcome
from .base import Executor, Job, Reporter

REATTACH_POLL = 0.2
STALE_JOURNAL = 86400.0  # a dead worker's journal no task came back for is removed after this many seconds
PACK = 64  # most jobs in one pipe message to one worker


class _Frames(asyncio.Protocol):
    """Reassembles the runner's length-prefixed pickles from the worker's event pipe."""

    def __init__(
        self,
        on_message: Callable[[dict[str, Any]], None],
        on_eof: Callable[[], None],
        reporter: Reporter,
        stored: Callable[[], None],
    ):
        self._buffer = bytearray()
        self._on_message, self._on_eof, self._reporter, self._stored = on_message, on_eof, reporter, stored

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        with self._reporter.batch():  # what one read brings (many small tasks' reports) is stored at once
            self._messages()
        self._stored()  # committed: only now may a freed worker's journal be emptied and the worker get more

    def _messages(self) -> None:
        while len(self._buffer) >= HEADER.size:
            size = HEADER.unpack_from(self._buffer)[0]
            end = HEADER.size + size
            if len(self._buffer) < end:
                return
            message = pickle.loads(self._buffer[HEADER.size : end])
            del self._buffer[:end]
            self._on_message(message)

    def connection_lost(self, exc: Exception | None) -> None:
        self._on_eof()


def _is_worker(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"hetflow_server.runner" in cmdline


def _journaled(journal: Path, task_id: str) -> dict[str, Any] | None:
    """The task's done record in a worker's journal, if the worker got that far."""
    try:
        records = frames(journal.read_bytes())
    except OSError:
        return None
    return next((said for said in records if said.get("task") == task_id), None)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


class _Worker:
    """One warm process running `runner serve`."""

    def __init__(self, executor: LocalExecutor):
        self.executor = executor
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready = False
        self.task_id: str | None = None  # the task running now
        self.pack: list[Job] = []  # the jobs handed to it that have not ended
        self._commands: asyncio.WriteTransport | None = None

    async def spawn(self) -> None:
        cmd_r, cmd_w = os.pipe()
        evt_r, evt_w = os.pipe()
        self.proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "hetflow_server.runner", "serve"),
                *(str(cmd_r), str(evt_w), str(self.executor.spool)),
                *([self.executor.PROVIDER] if self.executor.PROVIDER else []),
            ],
            pass_fds=(cmd_r, evt_w),
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        os.close(cmd_r)
        os.close(evt_w)
        loop = asyncio.get_running_loop()
        self._commands, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(cmd_w, "wb", buffering=0))
        await loop.connect_read_pipe(
            lambda: _Frames(self._on_message, self._on_eof, self.executor.reporter, self._stored),
            os.fdopen(evt_r, "rb", buffering=0),
        )

    @property
    def free(self) -> bool:
        return self.ready and not self.pack

    def _stored(self) -> None:
        """What the worker reported is committed: once it is idle its journal holds nothing the store lacks (and
        errors the store keeps masked), so it is emptied before the worker gets its next pack."""
        if self.free and self.proc is not None:
            with contextlib.suppress(OSError):
                os.truncate(self.executor.journal(self.proc.pid), 0)
        self.executor.dispatch()

    def run(self, jobs: list[Job]) -> None:
        self.pack = jobs
        # jobs of one foreach share their payload object: pickle writes it once per pack
        data = pickled({"jobs": [envelope(job) for job in jobs]})
        assert self._commands is not None
        self._commands.write(HEADER.pack(len(data)) + data)

    def kill(self) -> list[Job]:
        """Stop the process and everything it started; returns the jobs of its pack that had not started."""
        waiting = [job for job in self.pack if job.task_id != self.task_id]
        self.task_id, self.pack = None, []
        self.ready = False
        if self.proc and self.proc.poll() is None:
            _kill_group(self.proc.pid)
        if self._commands:
            self._commands.close()
        return waiting

    def _on_message(self, message: dict[str, Any]) -> None:
        op = message["op"]
        executor = self.executor
        if op == "ready":
            self.ready = True
        elif op == "started":
            self.task_id = message["task"]
            handle: dict[str, Any] = {"pid": self.proc.pid if self.proc else None}
            if len(self.pack) > 1:
                handle["pack"] = f"{len(self.pack)} left in a pack on this worker"
            executor.reporter.started(message["task"], handle)
        elif op == "log":
            executor.reporter.log(message["task"], message["stream"], message["text"])
        elif op == "done":
            self.task_id = None
            self.pack = [job for job in self.pack if job.task_id != message["task"]]
            executor.finish(message)

    def _on_eof(self) -> None:
        self.executor.worker_exited(self)


class LocalExecutor(Executor):
    kind = "local"
    workers = Int(2, help="Number of warm worker processes; each runs one task at a time.")
    PROVIDER: ClassVar[str] = ""  # a module the workers import and warm once, handing its names to each task

    def __init__(self, name: str, reporter: Any, spool: Path, **settings: Any):
        super().__init__(name, reporter, spool, **settings)
        self._pool: list[_Worker] = []
        self._queue: collections.deque[Job] = collections.deque()
        self._closing = False
        self._background: set[asyncio.Task[None]] = set()
        self._orphans: dict[str, int] = {}  # task id -> pid of a worker left by a previous engine

    async def start(self) -> None:
        self._sweep()
        for _ in range(max(1, self.workers)):
            await self._add_worker()

    def journal(self, pid: int) -> Path:
        """Where the worker with this pid journals its outcomes."""
        return Path(journal_path(str(self.spool), pid))

    def _sweep(self) -> None:
        """Journals of workers that ended long ago (an engine that died with idle workers left them)."""
        now = time.time()
        for journal in self.spool.glob("worker-*.journal"):
            with contextlib.suppress(OSError, ValueError):
                if now - journal.stat().st_mtime > STALE_JOURNAL and not _is_worker(int(journal.stem.split("-")[1])):
                    journal.unlink()

    async def _add_worker(self) -> None:
        worker = _Worker(self)
        self._pool.append(worker)
        await worker.spawn()

    def _in_background(self, coro: Any) -> None:
        work = asyncio.get_running_loop().create_task(coro)
        self._background.add(work)
        work.add_done_callback(self._background.discard)

    async def submit(self, jobs: list[Job]) -> None:
        self._queue.extend(jobs)
        self.dispatch()

    def dispatch(self) -> None:
        free = [worker for worker in self._pool if worker.free]
        for n, worker in enumerate(free):
            if not self._queue:
                return
            # a fair share of the queue per free worker, at most PACK: small tasks cross the pipe together,
            # a few long ones still spread over all workers
            size = min(PACK, -(-len(self._queue) // (len(free) - n)))
            worker.run([self._queue.popleft() for _ in range(size)])

    def finish(self, said: dict[str, Any]) -> None:
        """Hand a finished task's outcome (its done record) to the scheduler; a large result's file goes once read."""
        paths = JobPaths(str(self.spool / said["task"]))
        outcome = spooled_outcome(said, paths)
        self.reporter.finished(said["task"], outcome.result, outcome.error)
        if said.get("result") is None:
            Path(paths.result).unlink(missing_ok=True)

    async def cancel(self, task_id: str) -> None:
        for job in self._queue:
            if job.task_id == task_id:
                self._queue.remove(job)
                return
        for worker in self._pool:
            if worker.task_id == task_id:
                self._queue.extendleft(reversed(worker.kill()))
                return
        pid = self._orphans.pop(task_id, None)
        if pid is not None:
            _kill_group(pid)

    async def reattach(self, task_id: str, handle: dict[str, Any]) -> None:
        """Follow a task a previous engine started: its worker still runs it, or left its outcome behind."""
        pid = int(handle.get("pid") or 0)
        self._orphans[task_id] = pid
        self._in_background(self._follow(task_id, pid))

    async def _follow(self, task_id: str, pid: int) -> None:
        log, offset = self.spool / f"{task_id}.log", 0
        journal = self.journal(pid)
        while task_id in self._orphans:
            if log.exists():
                with open(log, "rb") as fh:
                    fh.seek(offset)
                    text = fh.read()
                offset += len(text)
                if text:
                    self.reporter.log(task_id, "stdout", text.decode("utf-8", errors="replace"))
            alive = bool(pid) and _is_worker(pid)  # looked at before the journal: a worker's last word is in it
            said = _journaled(journal, task_id)
            if said is not None or not alive:
                del self._orphans[task_id]
                if said is not None:
                    self.finish(said)
                    log.unlink(missing_ok=True)  # written only while no engine listened
                else:
                    self.reporter.lost(task_id, f"its worker process (pid {pid}) ended with the previous engine")
                if not alive and pid not in self._orphans.values():
                    journal.unlink(missing_ok=True)  # every task it ran has come back
                return
            await asyncio.sleep(REATTACH_POLL)

    def worker_exited(self, worker: _Worker) -> None:
        """A worker's pipe closed: reap it, fail what it was running, and start a replacement."""
        if self._closing:
            return
        proc = worker.proc
        task_id = worker.task_id
        self._queue.extendleft(reversed(worker.kill()))  # its pack's jobs that never started go to another
        if worker in self._pool:
            self._pool.remove(worker)
        if proc is not None:
            asyncio.get_running_loop().run_in_executor(None, proc.wait)
            self.journal(proc.pid).unlink(missing_ok=True)  # all it sent was stored
        if task_id is not None:
            code = proc.poll() if proc else None
            ended = f"the worker process (pid {proc.pid if proc else '?'}) ended while running the task"
            self.reporter.finished(
                task_id,
                None,
                {"type": "WorkerDied", "message": ended + (f", exit code {code}" if code is not None else "")},
            )
        self._in_background(self._add_worker())

    def describe(self) -> dict[str, Any]:
        ready = sum(w.ready for w in self._pool)
        return {
            "kind": self.kind,
            "workers": self.workers,
            "ready": ready,
            "busy": sum(w.task_id is not None for w in self._pool) + len(self._orphans),
            "queued": len(self._queue) + sum(max(0, len(w.pack) - 1) for w in self._pool),
            "healthy": ready > 0 or any(w.proc and w.proc.poll() is None for w in self._pool),
        }

    async def close(self) -> None:
        """Stop the pool. Workers still running a task are left to finish it: the next engine re-attaches."""
        self._closing = True
        self._orphans.clear()
        for worker in self._pool:
            if not worker.pack:
                worker.kill()
                if worker.proc is not None:  # idle: every outcome it journaled is stored
                    self.journal(worker.proc.pid).unlink(missing_ok=True)
            elif worker._commands:
                worker._commands.close()
        for worker in self._pool:
            if worker.proc is not None and not worker.pack:
                worker.proc.wait(timeout=5)
        self._pool.clear()
