"""What the ssh and slurm executors share: a transport, a directory per task under a remote root, the runner
shipped once, and one poll loop that follows every job with a single remote command per cycle.

Remote layout: `ROOT/runner-HASH.py` (the stdlib + cloudpickle runner), and per task `ROOT/TASK/task.job`,
`task.log`, `task.result`, `task.done` (JSON, written last). The done file is the task's own word on its outcome,
so it is found even after the batch system forgot the job.
"""

from __future__ import annotations

import asyncio
import codecs
import hashlib
import json
import logging
import pickle
import shlex
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from traitlets import Bool, Float, Int, List, Unicode

from .. import runner
from ..transport import AccessError, AnswerRefused, LocalTransport, SSHTransport, Transport, TransportError
from .base import Executor, Job

log = logging.getLogger(__name__)

ASK_AGAIN = 60.0  # seconds before a poll that lost its connection asks a login question again, after a refusal

RUNNER_SOURCE = Path(runner.__file__).read_bytes()
RUNNER_NAME = f"runner-{hashlib.sha256(RUNNER_SOURCE).hexdigest()[:12]}.py"


@dataclass
class RemoteJob:
    task_id: str
    directory: str
    job_id: str = ""  # the batch system's id (slurm), or the process group (ssh)
    started: bool = False
    offset: int = 0
    decoder: Any = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace"))

    @property
    def handle(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "dir": self.directory}


class RemoteExecutor(Executor):
    host = Unicode("localhost", help="Host to reach over SSH; 'localhost' runs commands locally (login-node mode).")
    port = Int(22, help="SSH port.")
    user = Unicode("", help="SSH user (default: the engine's user).")
    credential = Unicode("", help="Name of an ssh-key credential; empty: the SSH agent.")
    known_hosts = Unicode("~/.ssh/known_hosts", help="Host keys to verify against.")
    accept_new_host_keys = Bool(False, help="Record an unknown host key instead of refusing it (never a changed one).")
    proxy_jump = Unicode("", help="Bastion to go through, as user@host:port.")
    max_channels = Int(8, help="Concurrent SSH channels on the connection; keep below sshd's MaxSessions (10).")
    python = Unicode("python3", help="Python on the remote side (same minor version and cloudpickle major as here).")
    setup = List(Unicode(), help="Shell lines run before each task, e.g. 'module load python'.")
    remote_root = Unicode(
        "~/.hetflow", help="Directory on the remote side for task files; ~ and $VARIABLES are the remote shell's."
    )
    poll_interval = Float(1.0, help="Seconds between two polls of all running jobs.")
    local = Bool(False, help="Run commands locally even if a host is set (the server is on the login node).")

    def __init__(self, name: str, reporter: Any, spool: Path, **settings: Any):
        super().__init__(name, reporter, spool, **settings)
        self.jobs: dict[str, RemoteJob] = {}
        self._transport: Transport | None = None
        self._root = ""
        self._ready: asyncio.Lock | None = None
        self._poller: asyncio.Task[None] | None = None
        self._launching: set[str] = set()
        self._cancelled: set[str] = set()

    # --------------------------------------------------------------------------- connection

    @property
    def is_local(self) -> bool:
        return self.local or self.host in ("", "localhost")

    def _make_transport(self) -> Transport:
        if self.is_local:
            return LocalTransport()
        key = None
        if self.credential:
            secret = self.credentials(self.credential)
            if secret["kind"] != "ssh-key":
                raise AccessError(f"credential {self.credential!r} is a {secret['kind']}, not an ssh-key")
            key = secret["fields"]
        return SSHTransport(
            self.host,
            self.port,
            self.user,
            key,
            self.known_hosts,
            self.accept_new_host_keys,
            self.proxy_jump,
            self.max_channels,
            ask=self.asker(f"{self.user or '(agent user)'}@{self.host}:{self.port}") if self.asker else None,
        )

    async def prepared(self) -> Transport:
        """Connect, find the remote root, ship the runner and check the versions: once per engine."""
        if self._ready is None:
            self._ready = asyncio.Lock()
        async with self._ready:
            if self._transport is not None:
                return self._transport
            transport = self._make_transport()
            try:
                root = self.remote_root
                if root.startswith("~") or "$" in root:  # ~ and $SCRATCH-like variables, as the remote shell has them
                    root = (await transport.run(f"eval printf %s {shlex.quote(root)}")).out.strip()
                made = await transport.run(f"mkdir -p {shlex.quote(root)} && chmod 700 {shlex.quote(root)}")
                if made.code:
                    raise AccessError(f"cannot create {root} on {self.host}: {made.err.strip()}")
                runner_path = f"{root}/{RUNNER_NAME}"
                if await transport.read(runner_path) != RUNNER_SOURCE:
                    await transport.write(runner_path, RUNNER_SOURCE)
                await self._check_versions(transport, runner_path)
            except BaseException:
                await transport.close()  # the next try opens a new one
                raise
            self._root, self._transport = root, transport
            return transport

    async def _check_versions(self, transport: Transport, runner_path: str) -> None:
        found = await transport.run(self.with_setup(f"{self.python} {shlex.quote(runner_path)} versions"))
        if found.code:
            raise AccessError(f"{self.python} on {self.host} did not start: {(found.err or found.out).strip()}")
        python, pickle = found.out.split()
        here = f"{sys.version_info[0]}.{sys.version_info[1]}"
        mine = runner.cloudpickle_version()
        problems = []
        if python != here:
            problems.append(f"Python {python} there, {here} here (functions travel as bytecode: the minor must match)")
        if pickle.split(".")[0] != mine.split(".")[0]:
            problems.append(f"cloudpickle {pickle} there, {mine} here (the major must match)")
        if problems:
            raise AccessError(f"{self.python} on {self.host} does not match the engine: " + "; ".join(problems))

    def with_setup(self, command: str) -> str:
        """The command after the executor's setup lines, in a login shell (where `module` is defined)."""
        if not self.setup:
            return command
        return "bash -lc " + shlex.quote("; ".join([*self.setup, "exec " + command]))

    def runner_command(self, job: RemoteJob) -> str:
        return f"{self.python} {shlex.quote(self._root + '/' + RUNNER_NAME)} run {shlex.quote(job.directory)}"

    # --------------------------------------------------------------------------- submit and follow

    async def submit(self, jobs: list[Job]) -> None:
        try:
            transport = await self.prepared()
        except (AccessError, TransportError) as err:
            for job in jobs:
                self.reporter.finished(job.task_id, None, {"type": type(err).__name__, "message": str(err)})
            return
        # a directory per attempt: a retry must not find the last attempt's outcome
        remote = [RemoteJob(job.task_id, f"{self._root}/{job.task_id}-{uuid.uuid4().hex[:6]}") for job in jobs]
        await asyncio.gather(*(transport.mkdir(r.directory) for r in remote))
        await asyncio.gather(
            *(transport.write(f"{r.directory}/task.job", shipped(j)) for r, j in zip(remote, jobs, strict=True))
        )
        for job, spec in zip(remote, jobs, strict=True):
            self._launching.add(job.task_id)
            try:
                job.job_id = await self.launch(transport, job, spec.options)
            except (AccessError, TransportError, LaunchError) as err:
                self.reporter.finished(job.task_id, None, {"type": type(err).__name__, "message": str(err)})
                continue
            finally:
                self._launching.discard(job.task_id)
            if job.task_id in self._cancelled:  # cancelled while it was being submitted
                self._cancelled.discard(job.task_id)
                await transport.run(self.cancel_command(job))
                continue
            self.jobs[job.task_id] = job
            self.reporter.submitted(job.task_id, job.handle)
            self._follow()

    async def reattach(self, task_id: str, handle: dict[str, Any]) -> None:
        # `started` is reported again once the job is seen running; a task already running ignores it
        self.jobs[task_id] = RemoteJob(task_id, handle.get("dir", ""), str(handle.get("job_id", "")))
        self._follow()

    def _follow(self) -> None:
        if self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(self._poll_loop())

    async def _poll_loop(self) -> None:
        while self.jobs:
            try:
                await self.poll_once()
            except AccessError as err:
                for task_id in list(self.jobs):
                    self._finish(task_id, None, {"type": "AccessError", "message": str(err)})
            except AnswerRefused as err:  # the jobs run on; ask again later, not at every poll
                log.warning("hetflow %s: %s (asking again in %g s)", self.name, err, ASK_AGAIN)
                await asyncio.sleep(ASK_AGAIN)
            except TransportError as err:
                log.warning("hetflow %s: %s (will retry)", self.name, err)
            except Exception:
                log.exception("hetflow %s: polling failed", self.name)
            await asyncio.sleep(self.poll_interval)

    async def poll_once(self) -> None:
        """One remote command for all jobs: the batch system's states, then each task's log size and done file."""
        transport = await self.prepared()
        jobs = list(self.jobs.values())
        files = "; ".join(_file_report(j) for j in jobs)
        answer = await transport.run(f"{self.status_command(jobs)}; echo '::files'; {files}")
        status_text, _, files_text = answer.out.partition("::files\n")
        states = self.parse_status(status_text) if "::ok" in status_text else None  # None: the query failed
        for line in files_text.splitlines():
            task_id, size, done = line.split()
            job = self.jobs.get(task_id)
            if job is None:
                continue
            state = states.get(job.job_id) if states is not None else "UNKNOWN"
            if not job.started and (state in self.RUNNING_STATES or done == "done" or int(size) > 0):
                job.started = True
                self.reporter.started(task_id, job.handle)
            if int(size) > job.offset:
                await self._read_log(transport, job)
            if done == "done":
                await self._collect(transport, job)
            elif state is None or state in self.ENDED_STATES:
                message = await self.ended_without_outcome(transport, job, state)
                self._finish(job.task_id, None, {"type": "JobEnded", "message": message})

    async def _read_log(self, transport: Transport, job: RemoteJob) -> None:
        data = await transport.read(f"{job.directory}/task.log", job.offset) or b""
        job.offset += len(data)
        text = job.decoder.decode(data)
        if text:
            self.reporter.log(job.task_id, "stdout", text)

    async def _collect(self, transport: Transport, job: RemoteJob) -> None:
        await self._read_log(transport, job)
        done = json.loads(await transport.read(f"{job.directory}/task.done") or b"{}")
        error = done.get("error")
        result = None if error else await transport.read(f"{job.directory}/task.result")
        if error is None and result is None:
            error = {"type": "ResultMissing", "message": f"{job.directory}/task.result is missing on {self.host}"}
        self._finish(job.task_id, result, error)
        if error is None:
            await transport.run(f"rm -rf {shlex.quote(job.directory)}")

    def _finish(self, task_id: str, result: bytes | None, error: dict[str, str] | None) -> None:
        if self.jobs.pop(task_id, None) is not None:
            self.reporter.finished(task_id, result, error)

    async def cancel(self, task_id: str) -> None:
        if task_id in self._launching:
            self._cancelled.add(task_id)
        job = self.jobs.pop(task_id, None)
        if job is not None and job.job_id and self._transport is not None:
            await self._transport.run(self.cancel_command(job))

    async def check(self) -> dict[str, Any]:
        try:
            await self.prepared()
        except (AccessError, TransportError) as err:
            return {**self.describe(), "healthy": False, "error": str(err)}
        return self.describe()

    def describe(self) -> dict[str, Any]:
        where = "local commands" if self.is_local else f"{self.user or '(agent user)'}@{self.host}:{self.port}"
        return {
            "kind": self.kind,
            "host": where,
            "connected": self._transport is not None,
            "jobs": len(self.jobs),
            "healthy": True,
        }

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
        if self._transport is not None:
            await self._transport.close()

    # --------------------------------------------------------------------------- what each kind says

    RUNNING_STATES: frozenset[str] = frozenset()
    ENDED_STATES: frozenset[str] = frozenset()

    async def launch(self, transport: Transport, job: RemoteJob, options: dict[str, Any]) -> str:
        raise NotImplementedError

    def status_command(self, jobs: list[RemoteJob]) -> str:
        raise NotImplementedError

    def parse_status(self, text: str) -> dict[str, str]:
        raise NotImplementedError

    def cancel_command(self, job: RemoteJob) -> str:
        raise NotImplementedError

    async def ended_without_outcome(self, transport: Transport, job: RemoteJob, state: str | None) -> str:
        """Why the job is gone though the task left no outcome (killed, out of time, node failure...)."""
        raise NotImplementedError

    async def output_tail(self, transport: Transport, job: RemoteJob, name: str) -> str:
        """The end of what the job's own process printed (the shell's errors, Slurm's messages)."""
        data = await transport.read(f"{job.directory}/{name}") or b""
        text = data[-1500:].decode(errors="replace").strip()
        return f"; its output ends with: {text}" if text else ""


def shipped(job: Job) -> bytes:
    """The runner's job with upstream results inlined: the remote side cannot read the engine's store."""
    sources: dict[str, Any] = {}
    for upstream in job.upstreams():
        if not upstream.held_here:
            raise LaunchError(f"the result of upstream task {upstream.task_id} is not in the engine's store")
        sources[upstream.task_id] = upstream.data if upstream.path is None else upstream.path.read_bytes()
    return pickle.dumps(job.envelope(sources), protocol=5)


def _file_report(job: RemoteJob) -> str:
    """Shell that prints `TASK LOG_SIZE done|-` for one job."""
    directory = shlex.quote(job.directory)
    size = f"$(stat -c %s {directory}/task.log 2>/dev/null || echo 0)"
    done = f"$(test -e {directory}/task.done && echo done || echo -)"
    return f"printf '%s %s %s\\n' {shlex.quote(job.task_id)} {size} {done}"


class LaunchError(RuntimeError):
    """The batch system refused the job; the message quotes it."""
