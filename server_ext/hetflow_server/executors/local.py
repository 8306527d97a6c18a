"""`local`: a pool of warm worker processes on this machine, fed over pipes (no interpreter start per task)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import pickle
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from traitlets import Int

from ..runner import _HEADER
from .base import Executor, Job

log = logging.getLogger(__name__)


class _Frames(asyncio.Protocol):
    """Reassembles the runner's length-prefixed pickles from the worker's event pipe."""

    def __init__(self, on_message: Callable[[dict[str, Any]], None], on_eof: Callable[[], None]):
        self._buffer = bytearray()
        self._on_message, self._on_eof = on_message, on_eof

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while len(self._buffer) >= _HEADER.size:
            size = _HEADER.unpack_from(self._buffer)[0]
            end = _HEADER.size + size
            if len(self._buffer) < end:
                return
            message = pickle.loads(self._buffer[_HEADER.size : end])
            del self._buffer[:end]
            self._on_message(message)

    def connection_lost(self, exc: Exception | None) -> None:
        self._on_eof()


class _Worker:
    """One warm process running `runner serve`, in its own session so a kernel interrupt never reaches it."""

    def __init__(self, executor: LocalExecutor):
        self.executor = executor
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready = False
        self.task_id: str | None = None
        self._commands: asyncio.WriteTransport | None = None

    async def spawn(self) -> None:
        cmd_r, cmd_w = os.pipe()
        evt_r, evt_w = os.pipe()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hetflow_server.runner", "serve", str(cmd_r), str(evt_w)],
            pass_fds=(cmd_r, evt_w),
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        os.close(cmd_r)
        os.close(evt_w)
        loop = asyncio.get_running_loop()
        self._commands, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(cmd_w, "wb", buffering=0))
        await loop.connect_read_pipe(
            lambda: _Frames(self._on_message, self._on_eof), os.fdopen(evt_r, "rb", buffering=0)
        )

    def run(self, job: Job) -> None:
        self.task_id = job.task_id
        data = pickle.dumps({"task": job.task_id, "payload": job.payload, "log": str(job.log_path)}, protocol=5)
        assert self._commands is not None
        self._commands.write(_HEADER.pack(len(data)) + data)

    def kill(self) -> None:
        """Stop the process and everything it started; what it was running is not reported."""
        self.task_id = None
        self.ready = False
        if self.proc and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        if self._commands:
            self._commands.close()

    def _on_message(self, message: dict[str, Any]) -> None:
        op = message["op"]
        reporter = self.executor.reporter
        if op == "ready":
            self.ready = True
        elif op == "started":
            reporter.started(message["task"], {"pid": self.proc.pid if self.proc else None})
        elif op == "log":
            reporter.log(message["task"], message["stream"], message["text"])
        elif op == "done":
            self.task_id = None
            reporter.finished(message["task"], message["result"], message["error"])
        self.executor._dispatch()

    def _on_eof(self) -> None:
        self.executor._worker_exited(self)


class LocalExecutor(Executor):
    kind = "local"
    workers = Int(2, help="Number of warm worker processes; each runs one task at a time.")

    def __init__(self, name: str, reporter: Any, **settings: Any):
        super().__init__(name, reporter, **settings)
        self._pool: list[_Worker] = []
        self._queue: collections.deque[Job] = collections.deque()
        self._closing = False
        self._spawning: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        for _ in range(max(1, self.workers)):
            await self._add_worker()

    async def _add_worker(self) -> None:
        worker = _Worker(self)
        self._pool.append(worker)
        await worker.spawn()

    async def submit(self, jobs: list[Job]) -> None:
        self._queue.extend(jobs)
        self._dispatch()

    def _dispatch(self) -> None:
        for worker in self._pool:
            if not self._queue:
                return
            if worker.ready and worker.task_id is None:
                worker.run(self._queue.popleft())

    async def cancel(self, task_id: str) -> None:
        for job in self._queue:
            if job.task_id == task_id:
                self._queue.remove(job)
                return
        for worker in self._pool:
            if worker.task_id == task_id:
                worker.kill()
                return

    def _worker_exited(self, worker: _Worker) -> None:
        """A worker's pipe closed: reap it, fail what it was running, and start a replacement."""
        if self._closing:
            return
        proc = worker.proc
        task_id, worker.task_id, worker.ready = worker.task_id, None, False
        if worker in self._pool:
            self._pool.remove(worker)
        loop = asyncio.get_running_loop()
        if proc is not None:
            loop.run_in_executor(None, proc.wait)
        if task_id is not None:
            code = proc.poll() if proc else None
            self.reporter.finished(
                task_id,
                None,
                {
                    "type": "WorkerDied",
                    "message": f"the worker process (pid {proc.pid if proc else '?'}) ended while running the task"
                    + (f", exit code {code}" if code is not None else ""),
                    "traceback": "",
                },
            )
        replacement = loop.create_task(self._add_worker())
        self._spawning.add(replacement)
        replacement.add_done_callback(self._spawning.discard)

    def describe(self) -> dict[str, Any]:
        ready = sum(w.ready for w in self._pool)
        return {
            "kind": self.kind,
            "workers": self.workers,
            "ready": ready,
            "busy": sum(w.task_id is not None for w in self._pool),
            "queued": len(self._queue),
            "healthy": ready > 0 or any(w.proc and w.proc.poll() is None for w in self._pool),
        }

    async def close(self) -> None:
        self._closing = True
        for worker in self._pool:
            worker.kill()
        for worker in self._pool:
            if worker.proc is not None:
                worker.proc.wait(timeout=5)
        self._pool.clear()
