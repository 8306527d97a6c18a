"""The braket executor's tasks on a device ARN: each an Amazon Braket Hybrid Job next to the device.

Per task, under the executor's S3 prefix: the job (the runner's envelope, its context naming the device and the
shots) and a manifest (runner.run_s3 reads it); once per engine, a source bundle of the runner, the device provider
and the entry point (`braket_entry:main`). `CreateJob` names the bundle, the device, the instance and the manifest
(a hyperparameter); `GetJob` gives the status, one call per job per poll cycle (Braket has no batched form); the log
is tailed from CloudWatch Logs (`/aws/braket/jobs`, stream `JOBNAME/...`); the outcome is the done object the entry
point writes last, else Braket's `failureReason`. Cancel is `CancelJob`.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import logging
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

log = logging.getLogger(__name__)

ENDED = frozenset({"COMPLETED", "FAILED", "CANCELLED"})
LOG_GROUP = "/aws/braket/jobs"


def bundle() -> bytes:
    """The job's source: three top-level modules, byte-identical across engines (no times, no owners), so that
    engines of one version share one object."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for module in (runner, braket_device, braket_entry):
            source = Path(module.__file__ or "").read_bytes()
            info = tarfile.TarInfo(module.__name__.rsplit(".", 1)[-1] + ".py")
            info.size, info.mode, info.mtime = len(source), 0o644, 0
            tar.addfile(info, io.BytesIO(source))
    return gzip.compress(data.getvalue(), mtime=0)


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
        self._launching: set[str] = set()
        self._cancelled: set[str] = set()  # cancelled while their job was being created

    async def submit(self, jobs: list[Job]) -> None:
        executor = self.executor
        for job in jobs:
            hybrid = HybridJob(job.task_id, f"{job.task_id}-{uuid.uuid4().hex[:6]}")
            hybrid.name = f"hetflow-{hybrid.key}"
            self._launching.add(job.task_id)
            try:
                problem = executor.problem() or ("" if executor.role_arn else self.NO_ROLE.format(executor.name))
                if problem:
                    raise AccessError(problem)
                source = bundle()  # checked for on every submission: a lifecycle rule may have expired it
                bundle_key = f"hetflow-braket-{hashlib.sha256(source).hexdigest()[:12]}.tar.gz"
                await executor.s3_ensure(bundle_key, source)
                manifest = await executor.ship(hybrid.key, [job])
                hybrid.arn = await self._create(hybrid, job, manifest, bundle_key)
            except Exception as err:  # AWS refused, or credentials are missing: the task's error says which
                executor.reporter.finished(job.task_id, None, {"type": type(err).__name__, "message": str(err)})
                await self._forget(hybrid)
                continue
            finally:
                self._launching.discard(job.task_id)
            if job.task_id in self._cancelled:  # cancelled while it was being created: it must not run
                self._cancelled.discard(job.task_id)
                await self._cancel_job(hybrid)
                continue
            self.jobs[job.task_id] = hybrid
            executor.reporter.submitted(job.task_id, hybrid.handle)
        executor.follow()

    async def _create(self, hybrid: HybridJob, job: Job, manifest: str, bundle_key: str) -> str:
        executor = self.executor
        output: dict[str, Any] = {"s3Path": executor.s3_uri(f"{hybrid.key}/output")}
        if executor.kms_key_id:
            output["kmsKeyId"] = executor.kms_key_id
        algorithm: dict[str, Any] = {
            "scriptModeConfig": {
                "entryPoint": "braket_entry:main",
                "s3Uri": executor.s3_uri(bundle_key),
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
        hybrid = HybridJob(task_id, handle["s3"], handle["job_arn"], handle["job_name"])
        self.jobs[task_id] = hybrid
        self.executor.follow()

    async def poll_once(self) -> None:
        """Every job once; one job's trouble (throttling, a deleted job) does not hold up the others."""
        for hybrid in list(self.jobs.values()):
            try:
                await self._poll(hybrid)
            except Exception as err:
                if _code(err) == "ResourceNotFoundException":  # Braket no longer knows the job
                    await self._ended(hybrid, "GONE", "Braket no longer knows the job (deleted, or another region)")
                else:
                    self.executor.last_error = f"following {hybrid.name}: {type(err).__name__}: {err}"
                    log.warning("hetflow %s: %s (will retry)", self.executor.name, self.executor.last_error)

    async def _poll(self, hybrid: HybridJob) -> None:
        """GetJob; the log once it runs; the outcome once it ended."""
        executor = self.executor
        answer = await executor.call("braket", "get_job", jobArn=hybrid.arn)
        if self.jobs.get(hybrid.task_id) is not hybrid:
            return  # cancelled, or another attempt, meanwhile
        status = answer["status"]
        if status in ("RUNNING", *ENDED) and not hybrid.started:
            hybrid.started = True
            executor.reporter.started(hybrid.task_id, hybrid.handle)
        if hybrid.started:
            await self._read_log(hybrid)
        if status in ENDED:
            await self._ended(hybrid, status, answer.get("failureReason") or "it wrote no outcome")

    async def _ended(self, hybrid: HybridJob, status: str, reason: str) -> None:
        result, error = await self.executor.outcome(hybrid.key, hybrid.task_id)
        if result is None and error is None:
            error = {"type": "JobEnded", "message": f"Braket job {hybrid.name} ended {status}: {reason}"}
        if self.jobs.get(hybrid.task_id) is hybrid:
            self.end(hybrid.task_id, result, error)
            await self._forget(hybrid)

    def end(self, task_id: str, result: bytes | None, error: dict[str, str] | None) -> None:
        if self.jobs.pop(task_id, None) is not None:
            self.executor.reporter.finished(task_id, result, error)

    async def _forget(self, hybrid: HybridJob) -> None:
        """Delete the task's objects (best effort: a lifecycle rule on the prefix catches what is left)."""
        with contextlib.suppress(Exception):
            await self.executor.s3_delete_folder(hybrid.key)

    async def _read_log(self, hybrid: HybridJob) -> None:
        """New log lines; a log that cannot be read (permissions, throttling) is said once and does not keep the
        outcome from being collected."""
        executor = self.executor
        try:
            if not hybrid.stream:
                streams = await executor.call(
                    "logs", "describe_log_streams", logGroupName=LOG_GROUP, logStreamNamePrefix=f"{hybrid.name}/"
                )
                found = streams.get("logStreams", [])
                if not found:
                    return
                hybrid.stream = found[0]["logStreamName"]
            text, hybrid.log_token = await executor.tail_log(LOG_GROUP, hybrid.stream, hybrid.log_token)
        except Exception as err:
            if _code(err) != "ResourceNotFoundException":  # the account's first job: no log group yet
                executor.last_error = f"reading the log of {hybrid.name}: {type(err).__name__}: {err}"
            return
        if text:
            executor.reporter.log(hybrid.task_id, "stdout", text)

    async def cancel(self, task_id: str) -> None:
        if task_id in self._launching:
            self._cancelled.add(task_id)
        hybrid = self.jobs.pop(task_id, None)
        if hybrid is not None:
            await self._cancel_job(hybrid)

    async def _cancel_job(self, hybrid: HybridJob) -> None:
        await self.executor.call("braket", "cancel_job", jobArn=hybrid.arn)
        await self._forget(hybrid)


def _code(err: BaseException) -> str:
    return str(getattr(err, "response", {}).get("Error", {}).get("Code", ""))
