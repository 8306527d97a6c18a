"""`ssh`: a task runs as a process on the host, started in its own session and followed by pid."""

from __future__ import annotations

import shlex
from typing import Any

from ..transport import Transport
from .remote import LaunchError, RemoteExecutor, RemoteJob


class SSHExecutor(RemoteExecutor):
    kind = "ssh"
    RUNNING_STATES = frozenset({"alive"})
    ENDED_STATES = frozenset({"gone"})

    async def launch(self, transport: Transport, job: RemoteJob, options: dict[str, Any]) -> str:
        directory = shlex.quote(job.directory)
        command = self.with_setup(self.runner_command(job))
        answer = await transport.run(
            f"cd {directory} || exit 1; nohup setsid {command} > {directory}/runner.out 2>&1 < /dev/null & echo $!",
            retry=False,
        )
        pid = answer.out.strip()
        if answer.code or not pid.isdigit():
            raise LaunchError(f"could not start the task on {self.host}: {answer.err.strip() or answer.out.strip()}")
        return pid

    def status_command(self, jobs: list[RemoteJob]) -> str:
        pids = " ".join(shlex.quote(j.job_id) for j in jobs if j.job_id)
        return (
            f"for p in {pids}; do if kill -0 $p 2>/dev/null; then echo $p alive; else echo $p gone; fi; done; echo ::ok"
        )

    def parse_status(self, text: str) -> dict[str, str]:
        return dict(line.split()[:2] for line in text.splitlines() if len(line.split()) == 2)

    def cancel_command(self, job: RemoteJob) -> str:
        return f"kill -TERM -- -{int(job.job_id)} 2>/dev/null; kill -TERM {int(job.job_id)} 2>/dev/null; true"

    async def ended_without_outcome(self, transport: Transport, job: RemoteJob, state: str | None) -> str:
        return f"the task's process {job.job_id} on {self.host} ended without an outcome" + await self.output_tail(
            transport, job, "runner.out"
        )
