"""The base of every executor kind whose jobs live in another system and are learned about by asking it (ssh,
slurm, batch, hybrid): a record per job, the race between a launch and a cancel, one poll per cycle for all jobs,
start detection, log tails, finishing with the job's own outcome, and the message for a job that ended without one.

A kind fills hooks only:

- `launch(jobs)` hands a group of jobs over (a group is what `groups` makes: one job, or one array job's children)
  and returns a record for each, or an exception for one that could not go;
- `poll(records)` asks the system about every followed job at once and says what it `Saw` of each;
- `read_log(record, saw)` returns the log text added since the last call;
- `read_outcome(record)` returns the outcome the job left (through `shipping`), or None while there is none;
- `why_ended(record, saw)` explains a job that ended without an outcome (None: give it another cycle), quoting
  the end of its output (`ends_with`);
- `cancel_job(record)`, `cleanup(record, ok)`, `restore(task_id, handle)` (after an engine restart).

"Follow" means this here: keep polling a handed-over job until its outcome is reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from traitlets import Float

from ..protocol import AccessError, ResultGone
from ..shipping import Outcome
from .base import Executor, Job

log = logging.getLogger(__name__)

TAIL = 1500  # characters of a job's log quoted when it ends without an outcome


@dataclass
class Followed:
    """One handed-over job: its task, the system's id for it, and what the poll loop learned so far."""

    task_id: str
    job_id: str = ""  # a pid, a Slurm job id, a Batch job (or array child) id, a Hybrid Job ARN
    started: bool = False
    tail: str = ""  # the end of its log so far

    @property
    def handle(self) -> dict[str, Any]:
        """What the store keeps so that a restarted engine follows the job again (see `restore`)."""
        return {"job_id": self.job_id}


R = TypeVar("R", bound=Followed)


class Life(enum.Enum):
    """Where a job is, as its system says: a job it forgot has ENDED; UNKNOWN when the query itself failed."""

    WAITING = "waiting"
    RUNNING = "running"
    ENDED = "ended"
    UNKNOWN = "unknown"


@dataclass
class Saw:
    """What one poll learned of one job."""

    life: Life
    started: bool = False  # it runs, or ran (the log grew, an outcome exists, the system says it started)
    log: bool = True  # there may be new log to read
    outcome: bool | None = None  # an outcome is there (True), is not (False), or is not known without reading it
    detail: Any = None  # the system's own answer, for the hooks (a Slurm state, a describe_jobs entry)


class PolledExecutor(Executor, Generic[R]):
    poll_interval = Float(1.0, help="Seconds between two polls of all running jobs.")

    def __init__(self, name: str, reporter: Any, spool: Any, **settings: Any):
        super().__init__(name, reporter, spool, **settings)
        self.jobs: dict[str, R] = {}  # task id -> its job, while followed
        self.last_error = ""  # the last failed poll, shown by describe() until one succeeds
        self._launching: set[str] = set()
        self._cancelled: set[str] = set()  # cancelled while their job was being launched
        self._poller: asyncio.Task[None] | None = None
        self._cleaning: set[asyncio.Task[None]] = set()  # cleanups after an outcome; close() lets them end

    # --------------------------------------------------------------------------- hooks

    async def prepare(self) -> None:
        """Before a submission: connect, ship what jobs share; an AccessError or TransportError fails its jobs."""

    def groups(self, jobs: list[Job]) -> list[list[Job]]:
        """The launches a submission makes, each a `launch` call."""
        return [jobs]

    async def launch(self, jobs: list[Job]) -> list[R | Exception]:
        raise NotImplementedError

    async def poll(self, followed: list[R]) -> dict[str, Saw]:
        """What the system says of these jobs, in as few requests as it allows; a job left out is skipped."""
        raise NotImplementedError

    async def read_log(self, job: R, saw: Saw) -> str:
        return ""

    async def read_outcome(self, job: R) -> Outcome | None:
        raise NotImplementedError

    async def why_ended(self, job: R, saw: Saw) -> str | None:
        raise NotImplementedError

    async def cancel_job(self, job: R) -> None:
        raise NotImplementedError

    async def cleanup(self, job: R, ok: bool) -> None:
        """After the outcome is reported, or the job cancelled (ok: it completed)."""

    def restore(self, task_id: str, handle: dict[str, Any]) -> R | None:
        """The record of a job a previous engine launched, from its handle; None if the handle names none."""
        raise NotImplementedError

    def followed(self, job: R) -> None:
        """The job is followed from now on (a kind that is told of changes, not only polling, says so here)."""

    def poll_failed(self, err: Exception) -> float:
        """A poll that failed for a reason that may pass (the network, throttling): say so; returns how long to
        wait before the next poll beyond poll_interval."""
        self.last_error = f"following the jobs failed: {type(err).__name__}: {err}"
        log.warning("hetflow %s: %s (will retry)", self.name, self.last_error)
        return 0.0

    # --------------------------------------------------------------------------- submit

    async def submit(self, jobs: list[Job]) -> None:
        try:
            await self.prepare()
        except Exception as err:
            self._fail_all([job.task_id for job in jobs], err)
            return
        for group in self.groups(jobs):
            ids = {job.task_id for job in group}
            self._launching |= ids
            try:
                launched: list[R | Exception] = await self.launch(group)
            except Exception as err:  # the whole group: AWS refused, an upstream result is gone
                launched = [err] * len(group)
            finally:
                self._launching -= ids
            await self._take(group, launched)
        self.follow()

    async def _take(self, group: list[Job], launched: list[R | Exception]) -> None:
        cancelled = []
        with self.reporter.batch():
            for job, record in zip(group, launched, strict=True):
                if isinstance(record, ResultGone):
                    self._cancelled.discard(job.task_id)
                    self.reporter.gone(job.task_id, record)
                elif isinstance(record, Exception):
                    self._cancelled.discard(job.task_id)
                    self.reporter.finished(job.task_id, None, _error(record))
                elif job.task_id in self._cancelled:  # cancelled while it was being launched: it must not run
                    self._cancelled.discard(job.task_id)
                    cancelled.append(record)
                else:
                    self.jobs[job.task_id] = record
                    self.reporter.submitted(job.task_id, record.handle)
                    self.followed(record)
        for record in cancelled:
            with contextlib.suppress(Exception):  # the task is cancelled for the scheduler all the same
                await self._stop(record)

    async def reattach(self, task_id: str, handle: dict[str, Any]) -> None:
        # `started` is reported again once the job is seen running; a task already running ignores it
        record = self.restore(task_id, handle)
        if record is None:
            self.reporter.lost(task_id, f"its handle names no {self.kind} job: {handle}")
            return
        self.jobs[task_id] = record
        self.followed(record)
        self.follow()

    # --------------------------------------------------------------------------- follow

    def follow(self) -> None:
        """Poll while there are jobs to follow."""
        if self.jobs and (self._poller is None or self._poller.done()):
            self._poller = asyncio.get_running_loop().create_task(self._poll_loop())

    async def _poll_loop(self) -> None:
        while self.jobs:
            pause = 0.0
            try:
                await self.poll_once()
                self.last_error = ""
            except AccessError as err:  # not configured, or refused: nothing can be followed
                self._fail_all(list(self.jobs), err)
            except Exception as err:
                pause = self.poll_failed(err)
            await asyncio.sleep(self.poll_interval + pause)

    async def poll_once(self) -> None:
        """One cycle over every followed job, reporting what changed."""
        followed = list(self.jobs.values())
        if not followed:
            return
        said = await self.poll(followed)
        await asyncio.gather(*(self.look(job, said[job.task_id]) for job in followed if job.task_id in said))

    async def look(self, job: R, saw: Saw) -> None:
        """Act on what was learned of a job: report its start, its new log, its outcome."""
        if self.jobs.get(job.task_id) is not job:  # cancelled, or run again, meanwhile
            return
        if not job.started and saw.started:
            job.started = True
            self.reporter.started(job.task_id, job.handle)
        if saw.log:
            self.report_log(job, await self.read_log(job, saw))
        ended = saw.life is Life.ENDED
        outcome = await self.read_outcome(job) if saw.outcome or (saw.outcome is None and ended) else None
        if outcome is None and ended:
            message = await self.why_ended(job, saw)
            if message is None:
                return
            outcome = Outcome(None, {"type": "JobEnded", "message": message})
        if outcome is not None and self._finish(job, outcome):
            await self.cleanup(job, outcome.error is None)

    def report_log(self, job: R, text: str) -> None:
        if text and self.jobs.get(job.task_id) is job:
            job.tail = (job.tail + text)[-TAIL:]
            self.reporter.log(job.task_id, "stdout", text)

    def _finish(self, job: R, outcome: Outcome) -> bool:
        """Stop following the job and report its outcome (its files go only then: until the outcome is stored,
        they are the outcome); False if it was no longer followed."""
        if self.jobs.get(job.task_id) is not job:
            return False
        del self.jobs[job.task_id]
        self.reporter.finished(job.task_id, outcome.result, outcome.error)
        return True

    def _fail_all(self, task_ids: list[str], err: Exception) -> None:
        with self.reporter.batch():
            for task_id in task_ids:
                job = self.jobs.pop(task_id, None)
                self.reporter.finished(task_id, None, _error(err))
                if job is not None:
                    cleaning = asyncio.get_running_loop().create_task(self.cleanup(job, False))
                    self._cleaning.add(cleaning)
                    cleaning.add_done_callback(self._cleaning.discard)

    # --------------------------------------------------------------------------- control

    async def cancel(self, task_id: str) -> None:
        if task_id in self._launching:
            self._cancelled.add(task_id)
        job = self.jobs.pop(task_id, None)
        if job is not None:
            await self._stop(job)

    async def _stop(self, job: R) -> None:
        try:
            await self.cancel_job(job)
        finally:
            await self.cleanup(job, False)

    def describe(self) -> dict[str, Any]:
        shown: dict[str, Any] = {"kind": self.kind, "jobs": len(self.jobs), "healthy": not self.last_error}
        return {**shown, "error": self.last_error} if self.last_error else shown

    async def close(self) -> None:
        """Stop polling; running jobs are the next engine's (it re-attaches by their handles)."""
        if self._poller is not None:
            self._poller.cancel()
        if self._cleaning:
            await asyncio.wait(self._cleaning, timeout=10)


def options_key(options: dict[str, Any]) -> str:
    """The same text for the same options: what a launch (or a warm allocation) is asked for."""
    return json.dumps(options, sort_keys=True, default=str)


def by_options(jobs: list[Job]) -> list[list[Job]]:
    """One group per set of options, in order: what a launch asks its system for is the same for all its tasks."""
    groups: dict[str, list[Job]] = {}
    for job in jobs:
        groups.setdefault(options_key(job.options), []).append(job)
    return list(groups.values())


def ends_with(text: str) -> str:
    """The end of a job's output, to quote after why it ended."""
    text = text[-TAIL:].strip()
    return f"; its output ends with: {text}" if text else ""


def _error(err: BaseException) -> dict[str, str]:
    return {"type": type(err).__name__, "message": str(err)}
