"""`ssh`: a pack of tasks runs as one process on the host, started in its own session and followed by pid."""

from __future__ import annotations

import shlex
from typing import Any

from ..shipping import LaunchError
from ..transport import Transport
from .hosts import HostExecutor, HostJob
from .polled import Saw


class SSHExecutor(HostExecutor):
    """**Packing.** The tasks handed over together with the same options run as one process on the host, as many
    at once as its CPUs, each in a child process with its own log, outcome, retries and cancel. With
    `keep_alive=SECONDS` the process, once idle, waits that long for more tasks with the same options, which the
    engine hands over with a few SFTP writes; the executor panel lists it and cancels it."""

    kind = "ssh"
    RUNNING_STATES = frozenset({"alive"})
    ENDED_STATES = frozenset({"gone"})

    async def start_pack(
        self, transport: Transport, unpack: str, pack: str, jobs: list[HostJob], options: dict[str, Any]
    ) -> str:
        """One process for the pack, in its own session (a cancel stops it and what it started)."""
        where = shlex.quote(pack)
        command = self.with_setup(self.runner_command(pack, options))
        answer = await transport.run(
            f"{unpack} && cd {where} || exit 1; nohup setsid {command} > {where}/runner.out 2>&1 < /dev/null & echo $!",
            retry=False,
        )
        pid = answer.out.strip()
        if answer.code or not pid.isdigit():
            raise LaunchError(f"could not start the task on {self.host}: {answer.err.strip() or answer.out.strip()}")
        return pid

    def status_command(self, jobs: list[HostJob]) -> str:
        pids = " ".join(shlex.quote(j.job_id) for j in jobs if j.job_id)
        return (
            f"for p in {pids}; do if kill -0 $p 2>/dev/null; then echo $p alive; else echo $p gone; fi; done; echo ::ok"
        )

    def parse_status(self, text: str) -> dict[str, str]:
        return dict(line.split()[:2] for line in text.splitlines() if len(line.split()) == 2)

    def stop_command(self, job_id: str) -> str:
        return f"kill -TERM -- -{int(job_id)} 2>/dev/null; kill -TERM {int(job_id)} 2>/dev/null; true"

    async def why_ended(self, job: HostJob, saw: Saw) -> str:
        ended = f"the task's process {job.job_id} on {self.host} ended without an outcome"
        return ended + await self.output_tail(f"{job.pack}/runner.out")
