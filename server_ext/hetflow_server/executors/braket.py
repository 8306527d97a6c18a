"""`braket`: quantum tasks. The code gets `device` (a Braket device) and `shots`.

- `device=local` (or a local simulator's name: braket_sv, braket_dm, braket_ahs) runs the task in a warm local
  worker that imported braket and built the `LocalSimulator` once: a variational loop's thousands of sub-second
  circuit evaluations pay neither an interpreter start nor braket's import (seconds) nor a device build.
- A device ARN runs the task as an Amazon Braket Hybrid Job next to the QPU: see `hybrid.py`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar

from traitlets import Int, Unicode

from ..models import Option, SpecError, option_table, parse_count
from .base import Executor, Job
from .braket_device import LOCAL_SIMULATORS
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


class BraketExecutor(Executor):
    kind = "braket"
    options = option_table(
        Option("device", parse_device, "local simulator name or device ARN", "local"),
        Option("shots", parse_count, "shots per circuit, handed to the code as `shots`", "1000"),
    )
    device = Unicode("local", help="Default device: a local simulator (local, braket_sv, braket_dm) or an ARN.")
    shots = Int(1000, help="Default shots, handed to the code as `shots`.")
    workers = Int(1, help="Warm local workers for local-simulator tasks (each keeps its simulator).")

    def __init__(self, name: str, reporter: Any, spool: Path, **settings: Any):
        super().__init__(name, reporter, spool, **settings)
        try:
            parse_device(self.device)
        except ValueError as err:
            raise SpecError(f"executor {name!r} (braket): device={self.device!r}: {err}") from None
        self._local = _DeviceWorkers(name, reporter, spool / "local", workers=self.workers)

    def _context(self, job: Job) -> dict[str, Any]:
        return {"device": job.options.get("device", self.device), "shots": job.options.get("shots", self.shots)}

    async def start(self) -> None:
        await self._local.start()

    async def submit(self, jobs: list[Job]) -> None:
        for job in jobs:
            job.context = self._context(job)
            if job.context["device"] not in LOCAL_SIMULATORS:
                raise SpecError("not yet")
        await self._local.submit(jobs)

    async def reattach(self, task_id: str, handle: dict[str, Any]) -> None:
        await self._local.reattach(task_id, handle)

    async def cancel(self, task_id: str) -> None:
        await self._local.cancel(task_id)

    def describe(self) -> dict[str, Any]:
        local = self._local.describe()
        return {**local, "kind": self.kind, "device": self.device, "shots": self.shots}

    async def close(self) -> None:
        await self._local.close()
