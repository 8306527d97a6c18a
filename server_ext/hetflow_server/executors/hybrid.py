"""The braket executor's tasks on a device ARN: each an Amazon Braket Hybrid Job next to the device.

Per task, under the executor's S3 prefix: the job (the runner's envelope, its context naming the device and the
shots) and a manifest (runner.run_s3 reads it); once per engine, a source bundle of the runner, the device provider
and the entry point (`braket_entry:main`). `CreateJob` names the bundle, the device, the instance and the manifest
(a hyperparameter); `GetJob` gives the status, one call per job per poll cycle (Braket has no batched form); the log
is tailed from CloudWatch Logs (`/aws/braket/jobs`, stream `JOBNAME/...`); the outcome is the done object the entry
point writes last, else Braket's `failureReason`. Cancel is `CancelJob`.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import runner
from ..transport import AccessError
from . import braket_device, braket_entry
from .base import Job

if TYPE_CHECKING:
    from .braket import BraketExecutor

ENDED = frozenset({"COMPLETED", "FAILED", "CANCELLED"})
LOG_GROUP = "/aws/braket/jobs"


def bundle() -> bytes:
    """The job's source: three top-level modules, byte-identical across engines (fixed times and owners)."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for module in (runner, braket_device, braket_entry):
            source = Path(module.__file__ or "").read_bytes()
            info = tarfile.TarInfo(module.__name__.rsplit(".", 1)[-1] + ".py")
            info.size, info.mode, info.mtime = len(source), 0o644, 0
            tar.addfile(info, io.BytesIO(source))
    return data.getvalue()


@dataclass
class HybridJob:
    task_id: str
    key: str  # the task's S3 folder (under the prefix)
    arn: str = ""
    name: str = ""
    started: bool = False
    stream: str = ""  # the CloudWatch log stream, once Braket created it
    log_token: str | None = None

    @property
    def handle(self) -> dict[str, Any]:
        return {"job_arn": self.arn, "job_name": self.name, "s3": self.key}


class HybridJobs:
    """Submits, follows and cancels the Hybrid Jobs of one braket executor."""

    NO_ROLE = "executor {!r} (braket) has no role_arn: Hybrid Jobs run as an IAM role (see docs/braket.md)"

    def __init__(self, executor: BraketExecutor):
        self.executor = executor
        self.jobs: dict[str, HybridJob] = {}
        self._bundle_key = ""

    async def submit(self, jobs: list[Job]) -> None:
        executor = self.executor
        for job in jobs:
            try:
                problem = executor.problem() or ("" if executor.role_arn else self.NO_ROLE.format(executor.name))
                if problem:
                    raise AccessError(problem)
                if not self._bundle_key:
                    source = bundle()
                    key = f"hetflow-braket-{hashlib.sha256(source).hexdigest()[:12]}.tar.gz"
                    await executor.s3_put(key, source)
                    self._bundle_key = key
                hybrid = HybridJob(job.task_id, f"{job.task_id}-{uuid.uuid4().hex[:6]}")
                manifest = await executor.ship(hybrid.key, [job])
                hybrid.name = f"hetflow-{hybrid.key}"
                hybrid.arn = await self._create(hybrid, job, manifest)
            except Exception as err:  # AWS refused, or credentials are missing: the task's error says which
                executor.reporter.finished(job.task_id, None, {"type": type(err).__name__, "message": str(err)})
                continue
            self.jobs[job.task_id] = hybrid
            executor.reporter.submitted(job.task_id, hybrid.handle)
        executor.follow()

    async def _create(self, hybrid: HybridJob, job: Job, manifest: str) -> str:
        executor = self.executor
        output: dict[str, Any] = {"s3Path": executor.s3_uri(f"{hybrid.key}/output")}
        if executor.kms_key_id:
            output["kmsKeyId"] = executor.kms_key_id
        algorithm: dict[str, Any] = {
            "scriptModeConfig": {
                "entryPoint": "braket_entry:main",
                "s3Uri": executor.s3_uri(self._bundle_key),
                "compressionType": "GZIP",
            }
        }
        if executor.image_uri:
            algorithm["containerImage"] = {"uri": executor.image_uri}
        request = {
            "clientToken": uuid.uuid4().hex,
            "jobName": hybrid.name,
            "roleArn": executor.role_arn,
            "algorithmSpecification": algorithm,
            "outputDataConfig": output,
            "instanceConfig": {
                "instanceType": job.options.get("instance_type", executor.instance_type),
                "volumeSizeInGb": executor.volume_size,
                "instanceCount": 1,
            },
            "deviceConfig": {"device": job.context["device"]},
            "hyperParameters": {"hetflow_manifest": manifest},
            "tags": {"hetflow-task": job.task_id},
        }
        answer = await executor.call("braket", "create_job", **request)
        return answer["jobArn"]

    async def reattach(self, task_id: str, handle: dict[str, Any]) -> None:
        self.jobs[task_id] = HybridJob(task_id, handle["s3"], handle["job_arn"], handle["job_name"])
        self.executor.follow()

    async def poll_once(self) -> None:
        for hybrid in list(self.jobs.values()):
            await self._poll(hybrid)

    async def _poll(self, hybrid: HybridJob) -> None:
        """GetJob; the log once it runs; the outcome once it ended (read before the job is let go)."""
        executor = self.executor
        answer = await executor.call("braket", "get_job", jobArn=hybrid.arn)
        status = answer["status"]
        if status in ("RUNNING", *ENDED) and not hybrid.started:
            hybrid.started = True
            executor.reporter.started(hybrid.task_id, hybrid.handle)
        if hybrid.started:
            await self._read_log(hybrid)
        if status not in ENDED or hybrid.task_id not in self.jobs:
            return
        result, error = await executor.outcome(hybrid.key, hybrid.task_id)
        if result is None and error is None:
            reason = answer.get("failureReason") or "it wrote no outcome"
            error = {"type": "JobEnded", "message": f"Braket job {hybrid.name} ended {status}: {reason}"}
        self.end(hybrid.task_id, result, error)
        await executor.s3_delete_folder(hybrid.key)

    def end(self, task_id: str, result: bytes | None, error: dict[str, str] | None) -> None:
        if self.jobs.pop(task_id, None) is not None:
            self.executor.reporter.finished(task_id, result, error)

    async def _read_log(self, hybrid: HybridJob) -> None:
        executor = self.executor
        if not hybrid.stream:
            from botocore.exceptions import ClientError

            try:
                streams = await executor.call(
                    "logs", "describe_log_streams", logGroupName=LOG_GROUP, logStreamNamePrefix=f"{hybrid.name}/"
                )
            except ClientError as err:  # the account's first job: Braket has not made the group yet
                if err.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                    return
                raise
            found = streams.get("logStreams", [])
            if not found:
                return
            hybrid.stream = found[0]["logStreamName"]
        text, hybrid.log_token = await executor.tail_log(LOG_GROUP, hybrid.stream, hybrid.log_token)
        if text:
            executor.reporter.log(hybrid.task_id, "stdout", text)

    async def cancel(self, task_id: str) -> None:
        hybrid = self.jobs.pop(task_id, None)
        if hybrid is not None and hybrid.arn:
            await self.executor.call("braket", "cancel_job", jobArn=hybrid.arn)
