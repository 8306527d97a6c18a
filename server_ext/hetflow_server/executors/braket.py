"""`braket`: quantum tasks. The code gets `device` (a Braket device) and `shots`.

- `device=local` (or a local simulator's name: braket_sv, braket_dm, braket_ahs) runs the task in a warm local
  worker that imported braket and built the `LocalSimulator` once: a variational loop's thousands of sub-second
  circuit evaluations pay neither an interpreter start nor braket's import (seconds) nor a device build.
- A device ARN runs the task as an Amazon Braket Hybrid Job next to the QPU: the `hybrid` kind (hybrid.py), with
  the AWS settings every AWS kind has (aws.py): credentials, region, S3 prefix, encryption.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from traitlets import Int, Unicode

from ..models import Option, option_table
from .base import Job
from .braket_device import LOCAL_SIMULATORS
from .hybrid import INSTANCE, KEEP_ALIVE, SHOTS, HybridExecutor, parse_arn
from .local import LocalExecutor


def parse_device(text: str) -> str:
    text = text.strip()
    if text in LOCAL_SIMULATORS:
        return text
    try:
        return parse_arn(text)
    except ValueError:
        simulators = ", ".join(LOCAL_SIMULATORS)
        raise ValueError(
            f"name a local simulator ({simulators}) or a device ARN (arn:aws:braket:REGION::device/...)"
        ) from None


class _DeviceWorkers(LocalExecutor):
    """Warm local workers whose tasks get a device (the provider builds it once per worker)."""

    kind = "braket"
    PROVIDER: ClassVar[str] = "hetflow_server.executors.braket_device"


class BraketExecutor(HybridExecutor):
    """A hybrid executor whose tasks on a local simulator go to warm local workers instead."""

    kind = "braket"
    options = option_table(
        Option("device", parse_device, "local simulator name or device ARN", "local"), SHOTS, INSTANCE, KEEP_ALIVE
    )
    device = Unicode("local", help="Default device: a local simulator (local, braket_sv, braket_dm) or an ARN.")
    workers = Int(1, help="Warm local workers for local-simulator tasks (each keeps its simulator).")

    def __init__(self, name: str, reporter: Any, spool: Path, **settings: Any):
        super().__init__(name, reporter, spool, **settings)
        self._local = _DeviceWorkers(name, reporter, spool / "local", workers=self.workers)

    async def start(self) -> None:
        await self._local.start()

    async def submit(self, jobs: list[Job]) -> None:
        local = []
        for job in jobs:
            job.context = self.context(job)
            if job.context["device"] in LOCAL_SIMULATORS:
                local.append(job)
        if local:
            await self._local.submit(local)
        if len(local) < len(jobs):
            await super().submit([job for job in jobs if job.context["device"] not in LOCAL_SIMULATORS])

    async def reattach(self, task_id: str, handle: dict[str, Any]) -> None:
        if handle.get("job_arn"):
            await super().reattach(task_id, handle)
        else:
            await self._local.reattach(task_id, handle)

    async def cancel(self, task_id: str) -> None:
        await super().cancel(task_id)
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
        return {**shown, **aws, "healthy": local["healthy"] and aws["healthy"]}

    async def reach(self) -> str | None:
        return await super().reach() if self.uses_aws else None

    async def close(self) -> None:
        await super().close()
        await self._local.close()
