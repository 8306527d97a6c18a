"""What the ssh and slurm kinds share: a transport to a host (SSH, or local commands on a login node), a directory
per attempt under a remote root, the runner shipped once, packs, and one command per poll cycle that asks for the
state of every job and, per task, the size of its log, whether it started (and where) and whether it is done.

Packing: the tasks handed over together with the same options go out as one pack: ONE launch (an sbatch of a job
array, one process over SSH) whose processes ("elements") take tasks from the pack's queue until it is empty, each
task in a child process of its own, in parallel up to the element's CPUs (runner.run_queue). A foreach of trivial
tasks costs about one job; long tasks spread over the elements as they start. A task keeps its own directory, log,
outcome, retry and cancel: a cancel takes it out of the queue, or stops its child process, and stops the whole
launch once none of its tasks is left.

Remote layout: `ROOT/runner-HASH.py`; per pack `ROOT/pack-XXXXXXXX/` with `queue/` (an entry per task, naming its
directory), `claimed/` and the elements' own output; per attempt `ROOT/TASK-XXXXXX/` holding the job's files
(shipping.JobPaths with base `DIR/task`: `task.job`, `task.started` (the element's name), `task.log`,
`task.result`, `task.done` written last, `task.cancel`). The done file is the task's own word on its outcome, so it
is found even after the batch system forgot the job.
"""

from __future__ import annotations

import asyncio
import base64
import codecs
import contextlib
import io
import json
import logging
import shlex
import sys
import tarfile
import time
import uuid
import zlib
from dataclasses import dataclass, field
from typing import Any

from traitlets import Bool, Float, Int, List, Unicode

from .. import runner
from ..models import Option, option_table, parse_seconds
from ..protocol import AccessError, AnswerRefused, NotFound, ResultGone
from ..shipping import (
    RUNNER_NAME,
    RUNNER_SOURCE,
    JobPaths,
    Outcome,
    envelope,
    inlined,
    kept_result,
    pickled,
    read_outcome,
)
from ..transport import LocalTransport, NoSuchPath, SSHTransport, Transport
from .base import Job
from .blobs import BlobStore
from .follower import Follower
from .polled import Followed, Life, PolledExecutor, Saw, by_options, ends_with, options_key

log = logging.getLogger(__name__)

INLINE_RESULT = 1 << 20  # bytes of a result that come back with the poll that saw it done (larger: SFTP)
ASK_AGAIN = 60.0  # seconds before a poll that lost its connection asks a login question again, after a refusal


@dataclass
class HostJob(Followed):
    """job_id is the launch's (a Slurm job or array, a process); element the process that took the task."""

    directory: str = ""
    pack: str = ""  # the pack's directory
    entry: str = ""  # the task's name in the pack's queue
    element: str = ""  # once it started: "JOB_INDEX" of an array, "JOB", or a pid
    node: str = ""  # the host the element runs on
    offset: int = 0  # of the log, read up to
    outcome_files: dict[str, bytes] = field(default_factory=dict)  # the done file and result, as the poll read them
    decoder: Any = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace"))

    @property
    def paths(self) -> JobPaths:
        return JobPaths(f"{self.directory}/task")

    @property
    def handle(self) -> dict[str, Any]:
        shown = {"job_id": self.job_id, "dir": self.directory, "pack": self.pack, "entry": self.entry}
        return {**shown, "element": self.element, "node": self.node} if self.element else shown

    def started_at(self, where: str) -> None:
        """Where it started, from its `task.started` (`ELEMENT@NODE`), once."""
        if not self.element and where:
            self.element, _, self.node = where.partition("@")


@dataclass
class Pack:
    """One launch (an allocation): its tasks still followed, how many it took, where they ran, whether any failed
    (its directory then stays, for a look). With `keep_alive`, a warm allocation: its elements wait that long for
    more tasks with the same options once idle."""

    job_id: str
    live: set[str] = field(default_factory=set)
    tasks: int = 0  # tasks handed to it
    nodes: set[str] = field(default_factory=set)
    keep_alive: float = 0.0
    idle_since: float = field(default_factory=time.time)  # when its last task ended
    failed: bool = False
    trimmed: bool = False  # its elements that never started were stopped once every task had started

    def take(self, task_id: str) -> None:
        self.live.add(task_id)
        self.tasks += 1

    @property
    def idle_for(self) -> float:
        return 0.0 if self.live else time.time() - self.idle_since

    @property
    def alive(self) -> bool:
        """As far as the engine knows: running tasks, or idle for less than its keep_alive."""
        return bool(self.live) or self.idle_for < self.keep_alive


KEEP_ALIVE = Option(
    "keep_alive",
    parse_seconds,
    "seconds a job that ran its tasks waits for more with the same options (a warm allocation); default 0",
    "120",
)


class HostExecutor(PolledExecutor[HostJob]):
    options = option_table(KEEP_ALIVE)
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
    push = Bool(True, help="Follow running tasks through one long-lived command beside them, not only by polling.")
    blob_min = Int(
        64 * 1024,
        help="Inputs, foreach elements and upstream results of at least this many bytes travel as content-addressed "
        "blobs into REMOTE_ROOT/blobs, each sent once while it stays there; 0: everything travels with its task.",
    )
    blob_limit = Int(
        20 * 1024**3, help="Bytes the blob store may hold: beyond, the least recently used go first; 0: no limit."
    )
    blob_age = Float(14 * 86400.0, help="Seconds a blob unused stays in the blob store; 0: no limit.")

    def __init__(self, name: str, reporter: Any, spool: Any, **settings: Any):
        super().__init__(name, reporter, spool, **settings)
        self._transport: Transport | None = None
        self._root = ""
        self._ready: asyncio.Lock | None = None
        self._packs: dict[str, Pack] = {}  # pack directory -> its launch
        self._later: list[str] = []  # shell to run with the next command (removals, trims)
        self._warm: dict[str, str] = {}  # the options of a pack's tasks -> the warm pack that takes more
        self._follower = Follower(name, self._pushed)
        self._blobs = BlobStore(name, self.where, lambda arguments: self.with_setup(self._runner(arguments)))

    # --------------------------------------------------------------------------- connection

    @property
    def is_local(self) -> bool:
        return self.local or self.host in ("", "localhost")

    @property
    def where(self) -> str:
        return "local commands" if self.is_local else f"{self.user or '(agent user)'}@{self.host}:{self.port}"

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
                where = f"{shlex.quote(root)} {shlex.quote(root + '/blobs')}"
                made = await transport.run(f"mkdir -p {where} && chmod 700 {where}")
                if made.code:
                    raise AccessError(f"cannot create {root} on {self.host}: {made.err.strip()}")
                runner_path = f"{root}/{RUNNER_NAME}"
                if await transport.read(runner_path) != RUNNER_SOURCE:
                    await transport.write(runner_path, RUNNER_SOURCE)
                await self._check_versions(transport, runner_path)
            except BaseException:
                await transport.close()  # the next try opens a new one
                raise
            self._root, self._transport, self._blobs.directory = root, transport, f"{root}/blobs"
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

    def _runner(self, arguments: str) -> str:
        return f"{self.python} {shlex.quote(self._root + '/' + RUNNER_NAME)} {arguments}"

    def runner_command(self, pack: str, options: dict[str, Any], limit: float = 0, most: int = 0) -> str:
        """The command an element runs: tasks from the pack's queue (at most `most`, 0: no limit; waiting
        keep_alive seconds for more once idle); `limit` is its time limit in seconds (0: none known)."""
        return self._runner(f"pack {shlex.quote(pack)} {limit:g} {most} {options.get('keep_alive', 0):g}")

    # --------------------------------------------------------------------------- the polled-job hooks

    def groups(self, jobs: list[Job]) -> list[list[Job]]:
        return by_options(jobs)

    async def launch(self, jobs: list[Job]) -> list[HostJob | Exception]:
        """To the warm allocation for these options, if one takes them; the rest as a new pack. A job reading a
        kept result that is gone does not go (ResultGone: its producer runs again first)."""
        transport = await self.prepared()
        await self._start_follower(transport)
        if self.blob_min:
            limits = self.blob_limit or -1, self.blob_age or -1.0
            files, missing = await self._blobs.ship(transport, jobs, self.blob_min, INLINE_RESULT + 1, limits)
        else:
            files, missing = [pickled(envelope(job, inlined(job))) for job in jobs], {}
        going = [(job, file) for job, file in zip(jobs, files, strict=True) if isinstance(file, bytes)]
        records = iter(await self._launch_ready(transport, going, missing) if going else [])
        return [file if isinstance(file, ResultGone) else next(records) for file in files]

    async def _launch_ready(
        self, transport: Transport, going: list[tuple[Job, bytes]], missing: dict[str, bytes]
    ) -> list[HostJob]:
        key = options_key(going[0][0].options)
        handed: list[HostJob] = []
        if key in self._warm:
            await self._blobs.put(transport, missing)
            missing = {}
            handed = await self._hand_to(transport, self._warm[key], going)
            if len(handed) < len(going):  # it closed its queue: it ends, and the rest go to a new launch
                self._cooled(self._warm.pop(key))
        rest = going[len(handed) :]
        if not rest:
            return handed
        records = await self._launch_pack(transport, rest, missing)
        options = rest[0][0].options
        if options.get("keep_alive"):
            self._warm[key] = records[0].pack
            self._packs[records[0].pack].keep_alive = float(options["keep_alive"])
        return [*handed, *records]

    async def _hand_to(self, transport: Transport, name: str, going: list[tuple[Job, bytes]]) -> list[HostJob]:
        """Each task's files, then its entry in the allocation's queue (written aside and renamed in, so that it
        appears whole), until the queue is found closed. SFTP only: a few milliseconds a task."""
        pack = self._packs[name]
        handed: list[HostJob] = []
        for job, job_file in going:
            entry = f"{time.time_ns():020d}"  # after the pack's first entries, in the order handed
            record = HostJob(job.task_id, pack.job_id, directory=self._attempt_directory(job), pack=name, entry=entry)
            queue = f"{name}/queue/{entry}"
            try:
                await transport.mkdir(record.directory)
                await transport.write(record.paths.job, job_file)
                await transport.write(f"{queue}.part", self._entry(record, job))
                await transport.rename(f"{queue}.part", queue)
            except NoSuchPath:
                return handed
            pack.take(job.task_id)
            handed.append(record)
        return handed

    def _cooled(self, name: str) -> None:
        """A pack no longer warm: forgotten, and its directory removed, once none of its tasks is left."""
        pack = self._packs.get(name)
        if pack is None:
            return
        pack.keep_alive = 0.0
        if not pack.live:
            del self._packs[name]
            if not pack.failed:
                self._later.append(f"rm -rf {shlex.quote(name)}")

    def _attempt_directory(self, job: Job) -> str:
        # a directory per attempt: a retry must not find the last attempt's outcome
        return f"{self._root}/{job.task_id}-{uuid.uuid4().hex[:6]}"

    @staticmethod
    def _entry(record: HostJob, job: Job) -> bytes:
        return json.dumps({"dir": record.directory, "timeout": job.timeout}).encode()

    async def _launch_pack(
        self, transport: Transport, going: list[tuple[Job, bytes]], missing: dict[str, bytes]
    ) -> list[HostJob]:
        """Every file of the pack in one tar (one SFTP put), unpacked by the command that launches it: two round
        trips for a pack of any size."""
        name = f"pack-{uuid.uuid4().hex[:8]}"
        pack = f"{self._root}/{name}"
        jobs = [job for job, _ in going]
        records = [
            HostJob(job.task_id, directory=self._attempt_directory(job), pack=pack, entry=f"{n:06d}")
            for n, job in enumerate(jobs)
        ]
        files = {f"{name}/{path}": data for path, data in self.pack_files(pack, records, jobs[0].options).items()}
        files.update({f"blobs/{digest}": data for digest, data in missing.items()})
        for record, (job, job_file) in zip(records, going, strict=True):
            files[f"{record.directory.rsplit('/', 1)[-1]}/task.job"] = job_file
            files[f"{name}/queue/{record.entry}"] = self._entry(record, job)
        attempts = [record.directory.rsplit("/", 1)[-1] for record in records]
        folders = ["blobs", name, f"{name}/queue", f"{name}/claimed", *attempts]
        bundle = f"{pack}.tar"
        await transport.write(bundle, _tar(folders, files))
        unpack = f"tar -xf {shlex.quote(bundle)} -C {shlex.quote(self._root)} && rm -f {shlex.quote(bundle)}"
        job_id = await self.start_pack(transport, unpack, pack, records, jobs[0].options)
        self._packs[pack] = Pack(job_id, {r.task_id for r in records}, len(records), trimmed=len(records) == 1)
        for record in records:
            record.job_id = job_id
        return records

    # --------------------------------------------------------------------------- the blob store

    def holds(self, task_id: str, digest: str) -> bool:
        """A result this kind left in the blob store may be there still (it is looked for when needed)."""
        return bool(self.blob_min)

    async def fetch_results(self, kept: dict[str, str]) -> list[bytes]:
        return await self._blobs.fetch((await self.prepared()).read, kept)

    async def clean(self) -> dict[str, Any]:
        """Empty the blob store, except the blobs of tasks still running."""
        evicted, freed = (await self._blobs.ask(await self.prepared(), {}, 0, -1))[1]
        return {"removed": evicted, "bytes": freed}

    async def poll(self, followed: list[HostJob]) -> dict[str, Saw]:
        """One remote command for all jobs: the directories of finished tasks removed, the batch system's states,
        then per task its log size, where it started, and a finished one's outcome (a small result inline)."""
        transport = await self.prepared()
        files = "; ".join(_file_report(j) for j in followed)
        first = "".join(f"{command}; " for command in self._take_later())
        answer = await transport.run(f"{first}{self.status_command(followed)}; echo '::files'; {files}")
        status_text, _, files_text = answer.out.partition("::files\n")
        states = self.parse_status(status_text) if "::ok" in status_text else None  # None: the query failed
        by_task = {job.task_id: job for job in followed}
        said = {}
        job = None
        for line in files_text.splitlines():
            if line.startswith("::done ") and job is not None:
                job.outcome_files[job.paths.done] = line[len("::done ") :].encode()
                continue
            if line.startswith("::result ") and job is not None:
                job.outcome_files[job.paths.result] = base64.b64decode(line[len("::result ") :])
                continue
            task_id, size, done, element = line.split()
            job = by_task.get(task_id)
            if job is None:
                continue
            job.started_at(element if element != "-" else "")
            state = self.state(job, states)
            said[task_id] = Saw(
                self.life(state),
                started=bool(job.element),
                log=int(size) > job.offset,
                outcome=done == "done",
                detail=state,
            )
        for name in {job.pack for job in followed}:
            self._trim(name)
        if self._later:
            await self._run_later(transport)
        return said

    def _trim(self, name: str) -> None:
        """Elements still waiting once every task of their pack has started (or ended) have nothing to do: they
        are stopped with the next command, so that a foreach of short tasks holds no allocation it does not use."""
        pack = self._packs.get(name)
        if pack is None or pack.trimmed or not all(self.jobs[t].element for t in pack.live if t in self.jobs):
            return
        pack.trimmed = True
        command = self.trim_command(pack.job_id)
        if command:
            self._later.append(command)

    def _take_later(self) -> list[str]:
        later, self._later = self._later, []
        return later

    async def _run_later(self, transport: Transport) -> None:
        await transport.run("; ".join(self._take_later()))

    async def read_log(self, job: HostJob, saw: Saw) -> str:
        transport = await self.prepared()
        start = job.offset
        return self._logged(job, start, await transport.read(job.paths.log, start) or b"")

    @staticmethod
    def _logged(job: HostJob, start: int, data: bytes) -> str:
        """The text of log bytes read from `start`, less what was taken meanwhile (by the poll or the follower)."""
        if start > job.offset:  # a gap: what comes before is read by the other first
            return ""
        data = data[job.offset - start :]
        job.offset += len(data)
        return job.decoder.decode(data)

    # --------------------------------------------------------------------------- pushed

    async def _start_follower(self, transport: Transport) -> None:
        """The follower, started again (and told of every followed task) if it is not running."""
        if not self.push:
            return
        runner = shlex.quote(self._root + "/" + RUNNER_NAME)
        try:
            restarted = await self._follower.start(
                transport, self.with_setup(f"{self.python} {runner} follow {INLINE_RESULT}")
            )
        except Exception as err:  # the poll follows them all the same
            log.warning("hetflow %s: no follower (%s); polling", self.name, err)
            return
        if restarted:
            for job in self.jobs.values():
                self.followed(job)

    def followed(self, job: HostJob) -> None:
        self._follower.watch(job.task_id, job.paths.base, job.offset)

    async def _pushed(self, event: dict[str, Any]) -> None:
        job = self.jobs.get(str(event.get("task")))
        if job is None:
            return
        if "log" in event:
            self.report_log(job, self._logged(job, int(event["offset"]), base64.b64decode(event["log"])))
            return
        if "started" in event:
            job.started_at(str(event["started"]))
            self._trim(job.pack)
            await self.look(job, Saw(Life.RUNNING, started=True, log=False, outcome=False))
        elif "done" in event:
            job.outcome_files[job.paths.done] = str(event["done"]).encode()
            if event.get("result"):
                job.outcome_files[job.paths.result] = base64.b64decode(event["result"])
            await self.look(job, Saw(Life.RUNNING, started=True, log=False, outcome=True))

    async def reattach(self, task_id: str, handle: dict[str, Any]) -> None:
        with contextlib.suppress(Exception):  # not reachable now: the poll tries again
            await self._start_follower(await self.prepared())
        await super().reattach(task_id, handle)

    def state(self, job: HostJob, states: dict[str, str] | None) -> str | None:
        """The state of the element running the task; before it started, the launch's: waiting while any of its
        elements is not over, else the last one's (None: the system no longer knows any)."""
        if states is None:
            return "UNKNOWN"
        if job.element:
            return states.get(job.element)
        mine = [state for name, state in states.items() if name == job.job_id or name.startswith(job.job_id + "_")]
        waiting = [state for state in mine if state not in self.ENDED_STATES]
        return next(iter(waiting or mine), None)

    def life(self, state: str | None) -> Life:
        """A job's life from its state in the batch system (None: the system no longer knows it)."""
        if state == "UNKNOWN":
            return Life.UNKNOWN
        if state in self.RUNNING_STATES:
            return Life.RUNNING
        return Life.ENDED if state is None or state in self.ENDED_STATES else Life.WAITING

    async def read_outcome(self, job: HostJob) -> Outcome | None:
        """From what the poll brought along, else the files (a large result)."""
        transport = await self.prepared()

        async def read(path: str) -> bytes | None:
            if path not in job.outcome_files:
                found = await transport.read(path)
                if found is None:
                    return None
                job.outcome_files[path] = found
            return job.outcome_files[path]

        done = await read(job.paths.done)
        kept = kept_result(done) if done is not None else None
        return Outcome(kept, None) if kept is not None else await read_outcome(read, job.paths, f"{self.host}:")

    async def cancel_job(self, job: HostJob) -> None:
        """Out of the queue if it has not started, else its process stopped; the launch too once it has no task
        left."""
        if self._transport is None:
            return
        pack = self._packs.get(job.pack)
        command = f"rm -f {shlex.quote(f'{job.pack}/queue/{job.entry}')}; touch {shlex.quote(job.paths.base)}.cancel"
        if pack is not None and pack.live <= {job.task_id} and not pack.keep_alive:  # a warm one idles out
            command += f"; {self.stop_command(job.job_id)}"
        await self._transport.run(command)

    async def cleanup(self, job: HostJob, ok: bool) -> None:
        """A completed task's directory goes, and its pack's with the last of its tasks; a failed one's stays for a
        look at its files."""
        self._blobs.uses.pop(job.task_id, None)
        pack = self._packs.get(job.pack)
        gone = [job.directory] if ok else []
        if pack is not None:
            pack.live.discard(job.task_id)
            pack.failed = pack.failed or not ok
            if job.node:
                pack.nodes.add(job.node)
            if not pack.live:
                self._trim(job.pack)
                pack.idle_since = time.time()
                if not pack.keep_alive:  # a warm one's queue may take more tasks
                    del self._packs[job.pack]
                    gone += [] if pack.failed else [job.pack]
        if gone:
            self._later.append("rm -rf " + " ".join(map(shlex.quote, gone)))
        if self._later and not self.jobs and self._transport is not None:  # no poll comes to take them along
            await self._run_later(self._transport)

    def restore(self, task_id: str, handle: dict[str, Any]) -> HostJob | None:
        field = {name: str(handle.get(name, "")) for name in ("job_id", "dir", "pack", "entry", "element")}
        job = HostJob(task_id, field["job_id"], directory=field["dir"], pack=field["pack"], entry=field["entry"])
        job.element, job.node = field["element"], str(handle.get("node", ""))
        if job.pack:
            self._packs.setdefault(job.pack, Pack(job.job_id)).take(task_id)
        return job

    def poll_failed(self, err: Exception) -> float:
        if isinstance(err, AnswerRefused):  # the jobs run on; ask again later, not at every poll
            log.warning("hetflow %s: %s (asking again in %g s)", self.name, err, ASK_AGAIN)
            self.last_error = str(err)
            return ASK_AGAIN
        return super().poll_failed(err)

    async def output_tail(self, path: str) -> str:
        """The end of what the job's own process printed (the shell's errors, Slurm's messages)."""
        transport = await self.prepared()
        data = await transport.read(path) or b""
        return ends_with(data.decode(errors="replace"))

    async def reach(self) -> str | None:
        await self.prepared()
        return None

    def allocations(self) -> list[dict[str, Any]]:
        """The launches alive as far as the engine knows (running its tasks, or warm and idle for less than their
        keep_alive): job id, nodes, tasks running and run, idle for."""
        return [
            {
                "id": pack.job_id,
                "nodes": sorted(pack.nodes | {j.node for j in self.jobs.values() if j.pack == name and j.node}),
                "running": len(pack.live),
                "tasks": pack.tasks,
                "idle_for": round(pack.idle_for, 1),
                "keep_alive": pack.keep_alive,
            }
            for name, pack in self._packs.items()
            if pack.alive
        ]

    async def cancel_allocation(self, allocation: str) -> None:
        """Stop the launch (every element): its running tasks end as its batch system says (retries apply), its
        queued ones fail as not started, and no more tasks go to it."""
        names = [name for name, pack in self._packs.items() if pack.job_id == allocation and pack.alive]
        if not names:
            raise NotFound(f"executor {self.name!r} has no live allocation {allocation!r}")
        for key, name in list(self._warm.items()):
            if name in names:
                del self._warm[key]
        for name in names:
            self._cooled(name)
        transport = await self.prepared()
        await transport.run("; ".join([self.stop_command(allocation), *self._take_later()]))

    def describe(self) -> dict[str, Any]:
        shown = {**super().describe(), "host": self.where, "connected": self._transport is not None}
        store = f"{self._root or self.remote_root}/blobs" if self.blob_min else None
        return {**shown, "pushed": self._follower.running, "allocations": self.allocations(), "blob_store": store}

    async def close(self) -> None:
        await super().close()
        await self._follower.close()
        if self._transport is not None:
            await self._transport.close()

    # --------------------------------------------------------------------------- what each kind says

    RUNNING_STATES: frozenset[str] = frozenset()
    ENDED_STATES: frozenset[str] = frozenset()

    def pack_files(self, pack: str, jobs: list[HostJob], options: dict[str, Any]) -> dict[str, bytes]:
        """The kind's own files in the pack's directory (a job script), by name."""
        return {}

    async def start_pack(
        self, transport: Transport, unpack: str, pack: str, jobs: list[HostJob], options: dict[str, Any]
    ) -> str:
        """Run `unpack` (it puts the pack's files in place), then launch the elements that run the pack; returns
        the system's id for the launch."""
        raise NotImplementedError

    def status_command(self, jobs: list[HostJob]) -> str:
        """Shell that prints the jobs' states (parse_status reads them), then `::ok` when the query worked."""
        raise NotImplementedError

    def parse_status(self, text: str) -> dict[str, str]:
        raise NotImplementedError

    def stop_command(self, job_id: str) -> str:
        """Shell that stops a whole launch."""
        raise NotImplementedError

    def trim_command(self, job_id: str) -> str | None:
        """Shell that stops a launch's elements that have not started (None: it has no such elements)."""
        return None


SQUEEZE_FROM = 1 << 20  # bytes of a pack's files from which compressing them may pay
SAMPLE = 64 * 1024  # bytes of each file tried


def _pays(files: dict[str, bytes]) -> bool:
    """Whether gzip (level 1, about 100 MB/s) would shrink these files by a third: tried on a sample of each. Pickled
    arrays of zeros or text shrink tenfold; random or already compressed data not at all, and is sent as it is."""
    if sum(map(len, files.values())) < SQUEEZE_FROM:
        return False
    sample = b"".join(content[:SAMPLE] for content in files.values())
    return len(zlib.compress(sample, 1)) < 2 * len(sample) / 3


def _tar(folders: list[str], files: dict[str, bytes]) -> bytes:
    """A tar of these folders (mode 0700) and files (0600), names relative to the remote root; gzipped when that
    pays (tar -x finds out by itself)."""
    data = io.BytesIO()
    squeeze: dict[str, Any] = {"mode": "w:gz", "compresslevel": 1} if _pays(files) else {"mode": "w"}
    with tarfile.open(fileobj=data, **squeeze) as tar:
        for folder in folders:
            info = tarfile.TarInfo(folder)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o700, int(time.time())
            tar.addfile(info)
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(content), 0o600, int(time.time())
            tar.addfile(info, io.BytesIO(content))
    return data.getvalue()


def _file_report(job: HostJob) -> str:
    """Shell that prints `TASK LOG_SIZE done|- ELEMENT|-` for one task, then for a finished one `::done JSON` and
    (up to INLINE_RESULT bytes) `::result BASE64`. The done file is looked for first: when it is there, the log it
    follows is complete, and the size read after it is the whole log's."""
    base = shlex.quote(job.paths.base)
    done = f"d=$(test -e {base}.done && echo done || echo -)"
    started = f"e=$(cat {base}.started 2>/dev/null)"
    size = f"$(stat -c %s {base}.log 2>/dev/null || echo 0)"
    report = f'printf \'%s %s %s %s\\n\' {shlex.quote(job.task_id)} {size} "$d" "${{e:--}}"'
    result = (
        f"r=$(stat -c %s {base}.result 2>/dev/null || echo -1); "
        f"if [ $r -ge 0 ] && [ $r -le {INLINE_RESULT} ]; then printf '::result '; base64 -w0 {base}.result; echo; fi"
    )
    outcome = f"if [ $d = done ]; then printf '::done %s\\n' \"$(tr -d '\\n' < {base}.done)\"; {result}; fi"
    return f"{done}; {started}; {report}; {outcome}"
