"""What the ssh and slurm kinds share: a transport to a host (SSH, or local commands on a login node), a directory
per attempt under a remote root, the runner shipped once, and one command per poll cycle that asks for the state
of every job and the size of its log and whether its done file exists.

Remote layout: `ROOT/runner-HASH.py`, and per attempt `ROOT/TASK-XXXXXX/` holding the job's files (shipping.JobPaths
with base `DIR/task`: `task.job`, `task.log`, `task.result`, `task.done`, written last) and the batch system's own
output beside them. The done file is the task's own word on its outcome, so it is found even after the batch
system forgot the job.
"""

from __future__ import annotations

import asyncio
import codecs
import logging
import shlex
import sys
import uuid
from dataclasses import dataclass, field
from typing import Any

from traitlets import Bool, Int, List, Unicode

from .. import runner
from ..protocol import AccessError, AnswerRefused
from ..shipping import RUNNER_NAME, RUNNER_SOURCE, JobPaths, Outcome, envelope, inlined, pickled, read_outcome
from ..transport import LocalTransport, SSHTransport, Transport
from .base import Job
from .polled import Followed, Life, PolledExecutor, Saw, ends_with

log = logging.getLogger(__name__)

ASK_AGAIN = 60.0  # seconds before a poll that lost its connection asks a login question again, after a refusal


@dataclass
class HostJob(Followed):
    directory: str = ""
    offset: int = 0  # of the log, read up to
    decoder: Any = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace"))

    @property
    def paths(self) -> JobPaths:
        return JobPaths(f"{self.directory}/task")

    @property
    def handle(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "dir": self.directory}


class HostExecutor(PolledExecutor[HostJob]):
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
    local = Bool(False, help="Run commands locally even if a host is set (the server is on the login node).")

    def __init__(self, name: str, reporter: Any, spool: Any, **settings: Any):
        super().__init__(name, reporter, spool, **settings)
        self._transport: Transport | None = None
        self._root = ""
        self._ready: asyncio.Lock | None = None

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

    async def prepare(self) -> None:
        await self.prepared()

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

    def runner_command(self, job: HostJob) -> str:
        return f"{self.python} {shlex.quote(self._root + '/' + RUNNER_NAME)} run {shlex.quote(job.directory)}"

    # --------------------------------------------------------------------------- the polled-job hooks

    async def launch(self, jobs: list[Job]) -> list[HostJob | Exception]:
        transport = await self.prepared()
        # a directory per attempt: a retry must not find the last attempt's outcome
        records = [HostJob(job.task_id, directory=f"{self._root}/{job.task_id}-{uuid.uuid4().hex[:6]}") for job in jobs]
        shipped = [pickled(envelope(job, inlined(job))) for job in jobs]
        await asyncio.gather(*(transport.mkdir(r.directory) for r in records))
        await asyncio.gather(*(transport.write(r.paths.job, data) for r, data in zip(records, shipped, strict=True)))
        launched: list[HostJob | Exception] = []
        for record, job in zip(records, jobs, strict=True):
            try:
                record.job_id = await self.start_job(transport, record, job.options)
            except Exception as err:
                launched.append(err)
            else:
                launched.append(record)
        return launched

    async def poll(self, followed: list[HostJob]) -> dict[str, Saw]:
        """One remote command for all jobs: the batch system's states, then each task's log size and done file."""
        transport = await self.prepared()
        files = "; ".join(_file_report(j) for j in followed)
        answer = await transport.run(f"{self.status_command(followed)}; echo '::files'; {files}")
        status_text, _, files_text = answer.out.partition("::files\n")
        states = self.parse_status(status_text) if "::ok" in status_text else None  # None: the query failed
        by_task = {job.task_id: job for job in followed}
        said = {}
        for line in files_text.splitlines():
            task_id, size, done = line.split()
            job = by_task.get(task_id)
            if job is None:
                continue
            state = states.get(job.job_id) if states is not None else "UNKNOWN"
            life = self.life(state)
            said[task_id] = Saw(
                life,
                started=life is Life.RUNNING or done == "done" or int(size) > 0,
                log=int(size) > job.offset,
                outcome=done == "done",
                detail=state,
            )
        return said

    async def read_log(self, job: HostJob, saw: Saw) -> str:
        transport = await self.prepared()
        data = await transport.read(job.paths.log, job.offset) or b""
        job.offset += len(data)
        return job.decoder.decode(data)

    def life(self, state: str | None) -> Life:
        """A job's life from its state in the batch system (None: the system no longer knows it)."""
        if state == "UNKNOWN":
            return Life.UNKNOWN
        if state in self.RUNNING_STATES:
            return Life.RUNNING
        return Life.ENDED if state is None or state in self.ENDED_STATES else Life.WAITING

    async def read_outcome(self, job: HostJob) -> Outcome | None:
        transport = await self.prepared()
        return await read_outcome(transport.read, job.paths, f"{self.host}:")

    async def cancel_job(self, job: HostJob) -> None:
        if job.job_id and self._transport is not None:
            await self._transport.run(self.cancel_command(job))

    async def cleanup(self, job: HostJob, ok: bool) -> None:
        """A completed task's directory goes; a failed one's stays for a look at its files."""
        if ok and self._transport is not None:
            await self._transport.run(f"rm -rf {shlex.quote(job.directory)}")

    def restore(self, task_id: str, handle: dict[str, Any]) -> HostJob | None:
        return HostJob(task_id, str(handle.get("job_id", "")), directory=str(handle.get("dir", "")))

    def poll_failed(self, err: Exception) -> float:
        if isinstance(err, AnswerRefused):  # the jobs run on; ask again later, not at every poll
            log.warning("hetflow %s: %s (asking again in %g s)", self.name, err, ASK_AGAIN)
            self.last_error = str(err)
            return ASK_AGAIN
        return super().poll_failed(err)

    async def output_tail(self, job: HostJob, name: str) -> str:
        """The end of what the job's own process printed (the shell's errors, Slurm's messages)."""
        transport = await self.prepared()
        data = await transport.read(job.paths.beside(name)) or b""
        return ends_with(data.decode(errors="replace"))

    async def reach(self) -> str | None:
        await self.prepared()
        return None

    def describe(self) -> dict[str, Any]:
        where = "local commands" if self.is_local else f"{self.user or '(agent user)'}@{self.host}:{self.port}"
        return {**super().describe(), "host": where, "connected": self._transport is not None}

    async def close(self) -> None:
        await super().close()
        if self._transport is not None:
            await self._transport.close()

    # --------------------------------------------------------------------------- what each kind says

    RUNNING_STATES: frozenset[str] = frozenset()
    ENDED_STATES: frozenset[str] = frozenset()

    async def start_job(self, transport: Transport, job: HostJob, options: dict[str, Any]) -> str:
        """Start the job whose files are in place; returns the system's id for it."""
        raise NotImplementedError

    def status_command(self, jobs: list[HostJob]) -> str:
        """Shell that prints the jobs' states (parse_status reads them), then `::ok` when the query worked."""
        raise NotImplementedError

    def parse_status(self, text: str) -> dict[str, str]:
        raise NotImplementedError

    def cancel_command(self, job: HostJob) -> str:
        raise NotImplementedError


def _file_report(job: HostJob) -> str:
    """Shell that prints `TASK LOG_SIZE done|-` for one job. The done file is looked for first: when it is there,
    the log it follows is complete, and the size read after it is the whole log's."""
    paths = job.paths
    done = f"d=$(test -e {shlex.quote(paths.done)} && echo done || echo -)"
    size = f"$(stat -c %s {shlex.quote(paths.log)} 2>/dev/null || echo 0)"
    return f"{done}; printf '%s %s %s\\n' {shlex.quote(job.task_id)} {size} \"$d\""
