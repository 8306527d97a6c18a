"""`local`: a pool of warm worker processes on this machine, fed over pipes (no interpreter start per task).

Ready tasks go to a free worker in packs (one pipe message for many small tasks, sized so that every free worker
gets a share); a worker runs its pack one task after the other. A cancelled task that has not started in its pack
still runs there, its outcome ignored: only the running task is killed.

Workers run in sessions of their own: a kernel interrupt never reaches them, and a task outlives an engine that
dies. Each outcome is appended to the worker's journal in the spool (`worker-PID.journal`, one write per task, no
file per task) before it is sent, so a restarted engine re-attaches to a still-running worker by its pid and picks
the outcome up from there. Once a worker's outcomes are committed and it is idle, the engine empties its journal,
then hands it its next pack.

The engine notes each pack's task ids in `worker-PID.pack` before the worker gets them: a task's start is stored a
moment after the worker began it (STARTED_GRACE), so an engine killed in between leaves it `queued` in the store
while it runs. A restarted engine hands such a task to no new worker while the previous one may run it: it takes
the outcome from that worker's journal, or, once the worker has ended without one (a worker left by its engine
stops after the task it is running), runs it here.
"""

from __future__ import annotations

import asyncio
import codecs
import collections
import contextlib
import os
import pickle
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from traitlets import Int

from ..runner import frames, journal_path, kill_tree
from ..shipping import HEADER, JobPaths, envelope, pickled, spooled_outcome
from .base import Executor, Job, Reporter

REATTACH_POLL = 0.2
STALE_JOURNAL = 86400.0  # a dead worker's journal no task came back for is removed after this many seconds
PACK = 64  # most jobs in one pipe message to one worker
PACK_SECONDS = 0.05  # a pack holds about this much work by the tasks' measured time: packing saves the pipe's
# round trips, which only matter for short tasks, and a long task's pack would keep its queue from idle workers
LARGE_FRAME = 1 << 20  # a log message larger than this is passed on as it arrives, never held whole
_HEAD = 512  # bytes enough for a log message's op, task and stream


def _log_head(data: bytes) -> tuple[str, str, int, int] | None:
    """Of a runner's log message (the pickle, protocol 5, of {"op": "log", "task": ..., "stream": ..., "text": ...},
    the text last), the task, the stream, and where the text's UTF-8 bytes start and how many there are; None for
    anything else. A task that prints 100 MB at once sends it in one message: read so, the engine holds a piece."""
    try:
        at = 2 + 9 * (data[2:3] == b"\x95")  # PROTO 5, then maybe FRAME
        if data[:2] != b"\x80\x05" or data[at : at + 3] != b"}\x94(":  # EMPTY_DICT MEMOIZE MARK
            return None
        at, strings = at + 3, list[str]()
        while True:
            op, size = data[at : at + 1], {b"\x8c": 1, b"X": 4, b"\x8d": 8}.get(data[at : at + 1], 0)
            if not size:
                return None
            length, start = int.from_bytes(data[at + 1 : at + 1 + size], "little"), at + 1 + size
            if len(strings) == 7:
                if strings[::2] != ["op", "task", "stream", "text"] or strings[1] != "log" or op == b"\x8c":
                    return None
                return strings[3], strings[5], start, length
            if start + length > len(data):
                return None
            strings.append(data[start : start + length].decode())
            at = start + length + (data[start + length : start + length + 1] == b"\x94")  # MEMOIZE
    except (IndexError, UnicodeDecodeError):
        return None


class _LogText:
    """A large log message's text, handed on piece by piece as the pipe brings it."""

    def __init__(self, on_message: Callable[[dict[str, Any]], None], task: str, stream: str, left: int, tail: int):
        self._on_message, self._task, self._stream = on_message, task, stream
        self._left, self._tail = left, tail  # text bytes to come, then the pickle's last opcodes to skip
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    @property
    def done(self) -> bool:
        return not self._left and not self._tail

    def feed(self, data: bytes) -> bytes:
        """Takes what belongs to the message; returns what follows it."""
        if self._left:
            part, data = data[: self._left], data[self._left :]
            self._left -= len(part)
            text = self._decoder.decode(part, final=not self._left)
            if text:
                self._on_message({"op": "log", "task": self._task, "stream": self._stream, "text": text})
        skip = min(self._tail, len(data))
        self._tail -= skip
        return data[skip:]


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
        self._text: _LogText | None = None  # a large log message being passed on

    def data_received(self, data: bytes) -> None:
        with self._reporter.batch():  # what one read brings (many small tasks' reports) is stored at once
            self._feed(data)
        self._stored()  # committed: only now may a freed worker's journal be emptied and the worker get more

    def _feed(self, data: bytes) -> None:
        if self._text is not None:
            data = self._text.feed(data)
            if not self._text.done:
                return
            self._text = None
        self._buffer += data
        self._messages()

    def _messages(self) -> None:
        while len(self._buffer) >= HEADER.size:
            size = HEADER.unpack_from(self._buffer)[0]
            end = HEADER.size + size
            if size > LARGE_FRAME:
                head = _log_head(bytes(self._buffer[HEADER.size : HEADER.size + _HEAD]))
                if head is not None:
                    task, stream, start, length = head
                    rest = bytes(self._buffer[HEADER.size + start :])
                    self._buffer.clear()
                    self._text = _LogText(self._on_message, task, stream, length, size - start - length)
                    self._feed(rest)
                    return
                if len(self._buffer) < HEADER.size + _HEAD:
                    return  # its head is not all here: wait for it
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


def frames_of(journal: Path) -> list[dict[str, Any]]:
    """The records in a worker's journal (none when it has none)."""
    try:
        return frames(journal.read_bytes())
    except OSError:
        return []


def _journaled(journal: Path, task_id: str) -> dict[str, Any] | None:
    """The task's done record in a worker's journal, if the worker got that far."""
    return next((said for said in frames_of(journal) if said.get("task") == task_id), None)


def _pack_path(journal: Path) -> Path:
    """Where the engine notes the ids of the tasks it handed to the worker that keeps this journal."""
    return journal.with_suffix(".pack")


class _Worker:
    """One warm process running `runner serve`."""

    def __init__(self, executor: LocalExecutor):
        self.executor = executor
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready = False
        self.task_id: str | None = None  # the task running now
        self.pack: list[Job] = []  # the jobs handed to it that have not ended
        self._commands: asyncio.WriteTransport | None = None
        self._handed: int | None = None  # worker-PID.pack: the ids of `pack`, noted before it goes down the pipe
        self._noted: list[str] = []
        self._since = 0.0  # when the running task started
        self.asked = False  # a request to give jobs back is out

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
        handed = _pack_path(self.executor.journal(self.proc.pid))
        self._handed = os.open(handed, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
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
        if self.proc is not None:
            with contextlib.suppress(OSError):
                if self.free:
                    os.truncate(self.executor.journal(self.proc.pid), 0)
                self._note()  # what ended is stored as ended: no next engine waits for its word
        self.executor.dispatch()

    def _note(self) -> None:
        """worker-PID.pack holds the ids of the jobs handed to the worker whose end is not stored."""
        ids = [job.task_id for job in self.pack]
        if ids != self._noted and self._handed is not None:
            data = "".join(f"{task_id}\n" for task_id in ids).encode()
            os.pwrite(self._handed, data, 0)
            os.ftruncate(self._handed, len(data))
            self._noted = ids

    def run(self, jobs: list[Job]) -> None:
        self.pack = jobs
        # jobs of one foreach share their payload object: pickle writes it once per pack
        data = pickled({"jobs": [envelope(job) for job in jobs], "secrets": self.executor.reporter.secrets()})
        assert self._commands is not None
        self._note()  # before the worker can begin them
        self._commands.write(HEADER.pack(len(data)) + data)

    @property
    def unstarted(self) -> list[Job]:
        """The jobs of its pack that it has not begun (as far as the engine knows)."""
        return [job for job in self.pack if job.task_id != self.task_id]

    @property
    def givable(self) -> list[Job]:
        """What it could give back: not begun, and, while none runs, not the next, which it may be beginning (the
        first of a pack it begins without looking)."""
        return self.unstarted if self.task_id is not None else self.pack[1:]

    def take_back(self, count: int) -> None:
        """Ask for the last `count` jobs it could give, for an idle worker: it says which it gives ("given")."""
        ids = [job.task_id for job in self.givable[-count:]]
        data = pickled({"take": ids})
        assert self._commands is not None
        self._commands.write(HEADER.pack(len(data)) + data)
        self.asked = True

    def kill(self) -> list[Job]:
        """Stop the process and everything it started; returns the jobs of its pack that had not started."""
        waiting = self.unstarted
        self.task_id, self.pack = None, []
        self.ready = False
        if self.proc and self.proc.poll() is None:
            kill_tree(self.proc.pid)
        if self._commands:
            self._commands.close()
        self.close_handed()
        return waiting

    def close_handed(self) -> None:
        if self._handed is not None:
            os.close(self._handed)
            self._handed = None

    def _on_message(self, message: dict[str, Any]) -> None:
        op = message["op"]
        executor = self.executor
        if op == "ready":
            self.ready = True
        elif op == "started":
            self.task_id = message["task"]
            self._since = time.monotonic()
            handle: dict[str, Any] = {"pid": self.proc.pid if self.proc else None}
            if len(self.pack) > 1:
                handle["pack"] = f"{len(self.pack)} left in a pack on this worker"
            executor.reporter.started(message["task"], handle)
        elif op == "log":
            executor.reporter.log(message["task"], message["stream"], message["text"])
        elif op == "given":
            self.asked = False
            given = set(message["tasks"])
            back = [job for job in self.pack if job.task_id in given]
            self.pack = [job for job in self.pack if job.task_id not in given]
            executor.given(back)
        elif op == "done":
            if self.task_id == message["task"]:
                executor.measured(time.monotonic() - self._since)
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
        # what workers of a previous engine were handed (pid -> task ids, in order) and said (pid -> task id -> done
        # record, once the worker has ended: kept here, its journal may be gone or its pid reused)
        self._handed: dict[int, list[str]] = {}
        self._handed_to: dict[str, int] = {}  # task id -> pid, until the task is handed to this engine
        self._said: dict[int, dict[str, dict[str, Any]]] = {}
        self._waiting: dict[str, Job] = {}  # recovered queued jobs waiting for the word of the worker handed them
        self._task_seconds: float | None = None  # how long tasks run here lately (None: none ran yet)

    async def start(self) -> None:
        self._sweep()
        self._read_handed()
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
                    _pack_path(journal).unlink(missing_ok=True)

    def _read_handed(self) -> None:
        """What workers of a previous engine were handed; of those that have ended, what they said (read before
        a new worker that gets the same pid empties its journal)."""
        for handed in self.spool.glob("worker-*.pack"):
            with contextlib.suppress(OSError, ValueError):
                pid = int(handed.stem.split("-")[1])
                self._handed[pid] = handed.read_text().split()
                self._handed_to.update((task_id, pid) for task_id in self._handed[pid])
                if not _is_worker(pid):
                    self._said[pid] = self._last_words(pid)

    def _last_words(self, pid: int) -> dict[str, dict[str, Any]]:
        return {said["task"]: said for said in frames_of(self.journal(pid)) if "task" in said}

    async def _add_worker(self) -> None:
        worker = _Worker(self)
        self._pool.append(worker)
        await worker.spawn()

    def _in_background(self, coro: Any) -> None:
        work = asyncio.get_running_loop().create_task(coro)
        self._background.add(work)
        work.add_done_callback(self._background.discard)

    async def submit(self, jobs: list[Job]) -> None:
        for job in jobs:
            pid = self._handed_to.pop(job.task_id, None)  # the previous engine's worker this task was handed to
            if pid is None:
                self._queue.append(job)
            else:  # a recovered task that the previous engine's worker may be running: hear from it first
                self._waiting[job.task_id], self._orphans[job.task_id] = job, pid
                self._in_background(self._follow(job.task_id, pid))
        self.dispatch()

    def dispatch(self) -> None:
        """Each free worker takes a pack: a share of the queue counted over every worker (a busy one is free
        soon: the first free one taking all left the other idle), at most about PACK_SECONDS of work by the
        tasks' measured time, and at most PACK jobs."""
        free = [worker for worker in self._pool if worker.free]
        if not free:
            return
        share = -(-len(self._queue) // max(1, len(self._pool)))
        by_time = PACK if self._task_seconds is None else int(PACK_SECONDS / max(self._task_seconds, 1e-6))
        size = max(1, min(PACK, share, by_time))
        for worker in free:
            if not self._queue:
                self._steal(worker)
                continue
            worker.run([self._queue.popleft() for _ in range(min(size, len(self._queue)))])

    def _steal(self, idle: _Worker) -> None:
        """An idle worker and nothing queued: the busiest worker gives back half of what it has not begun, when
        that is worth a round trip (about 2 * PACK_SECONDS of work by the tasks' measured time)."""
        busy = [w for w in self._pool if w is not idle and not w.asked and w.givable]
        if not busy:
            return
        victim = max(busy, key=lambda w: len(w.givable))
        left = len(victim.givable)
        if self._task_seconds is None or left * self._task_seconds >= 2 * PACK_SECONDS:
            victim.take_back(max(1, left // 2))

    def given(self, jobs: list[Job]) -> None:
        """Jobs a worker gave back: first in the queue, for the idle worker that they were asked for."""
        self._queue.extendleft(reversed(jobs))

    def measured(self, seconds: float) -> None:
        """A task ran this long on a worker: the recent tasks' time (a moving average) sizes the next packs."""
        previous = self._task_seconds
        self._task_seconds = seconds if previous is None else 0.7 * previous + 0.3 * seconds

    def finish(self, said: dict[str, Any]) -> None:
        """Hand a finished task's outcome (its done record) to the scheduler; a large result's file goes once read."""
        paths = JobPaths(str(self.spool / said["task"]))
        outcome = spooled_outcome(said, paths)
        self.reporter.finished(said["task"], outcome.result, outcome.error)
        if said.get("result") is None:
            Path(paths.result).unlink(missing_ok=True)

    async def cancel(self, task_id: str) -> None:
        if self._waiting.pop(task_id, None) is not None:
            previous = self._orphans.pop(task_id)
            if self._running(previous) == task_id:  # it runs there (its start was not stored): stop it
                kill_tree(previous)
            return
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
            kill_tree(pid)

    async def reattach(self, task_id: str, handle: dict[str, Any]) -> None:
        """Follow a task a previous engine started: its worker still runs it, or left its outcome behind."""
        pid = int(handle.get("pid") or 0)
        self._handed_to.pop(task_id, None)
        self._orphans[task_id] = pid
        self._in_background(self._follow(task_id, pid))

    async def _follow(self, task_id: str, pid: int) -> None:
        log, offset = self.spool / f"{task_id}.log", 0
        while task_id in self._orphans:
            if log.exists():
                with open(log, "rb") as fh:
                    fh.seek(offset)
                    text = fh.read()
                offset += len(text)
                if text:
                    self.reporter.log(task_id, "stdout", text.decode("utf-8", errors="replace"))
            alive = self._alive(pid)  # looked at before the journal: a worker's last word is in it
            said = self._journaled(pid, task_id, alive)
            if said is None and alive and task_id in self._waiting and self._running(pid) == task_id:
                self.reporter.started(task_id, {"pid": pid})  # it runs there: say so (and store its handle)
            if said is not None or not alive:
                del self._orphans[task_id]
                job = self._waiting.pop(task_id, None)
                log.unlink(missing_ok=True)  # written, unmasked, only while no engine listened: its text is passed on
                if said is not None:
                    self.finish(said)
                elif job is not None:  # handed to that worker, which ended before it began the task: it runs here
                    self._queue.append(job)
                    self.dispatch()
                else:
                    self.reporter.lost(task_id, f"its worker process (pid {pid}) ended with the previous engine")
                if not alive and pid not in self._orphans.values() and pid not in self._handed_to.values():
                    self.journal(pid).unlink(missing_ok=True)  # every task it ran has come back
                    _pack_path(self.journal(pid)).unlink(missing_ok=True)
                return
            await asyncio.sleep(REATTACH_POLL)

    def _alive(self, pid: int) -> bool:
        """A previous engine's worker still runs (a pid one of this engine's workers got since is not it)."""
        return (
            bool(pid)
            and pid not in self._said
            and _is_worker(pid)
            and all(w.proc is None or w.proc.pid != pid for w in self._pool)
        )

    def _journaled(self, pid: int, task_id: str, alive: bool) -> dict[str, Any] | None:
        """The task's done record from a previous engine's worker, if the worker got that far; once the worker
        has ended, what its journal holds is kept in memory (its followers may remove the file)."""
        if not alive and pid not in self._said:
            self._said[pid] = self._last_words(pid)
        if pid in self._said:
            return self._said[pid].get(task_id)
        return _journaled(self.journal(pid), task_id)

    def _running(self, pid: int) -> str | None:
        """The task a previous engine's live worker runs: the first it was handed that has no outcome yet (once no
        engine listens, it runs no other)."""
        said = {record.get("task") for record in frames_of(self.journal(pid))}
        return next((task_id for task_id in self._handed.get(pid, []) if task_id not in said), None)

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
            _pack_path(self.journal(proc.pid)).unlink(missing_ok=True)
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
                    _pack_path(self.journal(worker.proc.pid)).unlink(missing_ok=True)
            else:  # its pack's ids stay noted for the next engine
                if worker._commands:
                    worker._commands.close()
                worker.close_handed()
        for worker in self._pool:
            if worker.proc is not None and not worker.pack:
                worker.proc.wait(timeout=5)
        self._pool.clear()
