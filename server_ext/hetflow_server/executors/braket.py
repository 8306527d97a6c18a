"""`braket`: quantum tasks. The code gets `device` (a Braket device) and `shots`.

- `device=local` (or a local simulator's name: braket_sv, braket_dm, braket_ahs) runs the task in a warm local
  worker that imported braket and built the `LocalSimulator` once: a variational loop's thousands of sub-second
  circuit evaluations pay neither an interpreter start nor braket's import (seconds) nor a device build.
- A device ARN runs the task as an Amazon Braket Hybrid Job next to the QPU (hybrid.py), with the AWS settings
  every AWS kind has (aws.py): credentials, region, S3 prefix, encryption.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar

from traitlets import Int, Unicode

from ..models import Option, SpecError, option_table, parse_count
from .aws import AWSExecutor
from .base import Job
from .braket_device import LOCAL_SIMULATORS
from .hybrid import HybridJobs
from .local import LocalExecutor

_ARN = re.compile(r"arn:aws:braket:[a-z0-9-]*:\d*:device/[A-Za-z0-9_./-]+")


def parse_device(text: str) -> str:
    text = text.strip()
    if text in LOCAL_SIMULATORS or _ARN.fullmatch(text):
        return text
    raise ValueError(
        f"name a local simulator ({', '.join(LOCAL_SIMULATORS)}) or a device ARN (arn:aws:braket:REGION::device/...)"
    )


class _DeviceWorkers(LocalExecutor):
    """Warm local workers whose tasks get a device (the provider builds it once per worker)."""

    kind = "braket"
    PROVIDER: ClassVar[str] = "hetflow_server.executors.braket_device"


def _instance(text: str) -> str:
    if not re.fullmatch(r"ml\.[a-z0-9]+\.[a-z0-9]+", text.strip()):
        raise ValueError("an ML instance type, e.g. ml.m5.large")
    return text.strip()


class BraketExecutor(AWSExecutor):
    kind = "braket"
    options = option_table(
        Option("device", parse_device, "local simulator name or device ARN", "local"),
        Option("shots", parse_count, "shots per circuit, handed to the code as `shots`", "1000"),
        Option("instance_type", _instance, "the Hybrid Job's instance (device ARNs)", "ml.m5.large"),
    )
    device = Unicode("local", help="Default device: a local simulator (local, braket_sv, braket_dm) or an ARN.")
    shots = Int(1000, help="Default shots, handed to the code as `shots`.")
    workers = Int(1, help="Warm local workers for local-simulator tasks (each keeps its simulator).")
    role_arn = Unicode("", help="IAM role the Hybrid Jobs run as (reads and writes the S3 prefix, uses the device).")
    image_uri = Unicode("", help="The Hybrid Jobs' container image (default: Braket's base job image).")
    instance_type = Unicode("ml.m5.large", help="Default instance of a Hybrid Job.")
    volume_size = Int(30, help="GB of storage for a Hybrid Job's instance.")

    def __init__(self, name: str, reporter: Any, spool: Path, **settings: Any):
        super().__init__(name, reporter, spool, **settings)
        try:
            parse_device(self.device)
        except ValueError as err:
            raise SpecError(f"executor {name!r} (braket): device={self.device!r}: {err}") from None
        self._local = _DeviceWorkers(name, reporter, spool / "local", workers=self.workers)
        self._jobs = HybridJobs(self)

    def _context(self, job: Job) -> dict[str, Any]:
        return {"device": job.options.get("device", self.device), "shots": job.options.get("shots", self.shots)}

    async def start(self) -> None:
        await self._local.start()

    async def submit(self, jobs: list[Job]) -> None:
        for job in jobs:
            job.context = self._context(job)
        local = [job for job in jobs if job.context["device"] in LOCAL_SIMULATORS]
        if local:
            await self._local.submit(local)
        if len(local) < len(jobs):
            await self._jobs.submit([job for job in jobs if job.context["device"] not in LOCAL_SIMULATORS])

    async def reattach(self, task_id: str, handle: dict[str, Any]) -> None:
        await (self._jobs if handle.get("job_arn") else self._local).reattach(task_id, handle)

    # the AWS poll loop follows the Hybrid Jobs
    def following(self) -> list[str]:
        return list(self._jobs.jobs)

    async def poll_once(self) -> None:
        await self._jobs.poll_once()

    def end(self, task_id: str, result: bytes | None, error: dict[str, str] | None) -> None:
        self._jobs.end(task_id, result, error)

    async def cancel(self, task_id: str) -> None:
        await self._jobs.cancel(task_id)
        await self._local.cancel(task_id)

    @property
    def uses_aws(self) -> bool:
        """Set up for device ARNs (otherwise AWS settings are nobody's concern)."""
        return bool(self.s3_prefix or self.credential or self.profile or self.device not in LOCAL_SIMULATORS)

    def describe(self) -> dict[str, Any]:
        """The local workers' health; the AWS side's too once the executor is set up for device ARNs."""
        local = self._local.describe()
        shown = {**local, "kind": self.kind, "device": self.device, "shots": self.shots}
        if not self.uses_aws:
            return shown
        aws = super().describe()
        return {**shown, **aws, "hybrid_jobs": len(self._jobs.jobs), "healthy": local["healthy"] and aws["healthy"]}

    async def check(self) -> dict[str, Any]:
        return await super().check() if self.uses_aws else self.describe()

    async def close(self) -> None:
        await super().close()
        await self._local.close()
