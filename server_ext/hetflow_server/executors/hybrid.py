"""`hybrid`: each task an Amazon Braket Hybrid Job next to its device (a device ARN); the braket kind routes its
tasks on device ARNs here.

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
import io
import re
import tarfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from traitlets import Int, Unicode

from .. import runner
from ..models import Option, option_table, parse_count
from ..protocol import AccessError, SpecError, sha256
from . import braket_device, braket_entry
from .aws import AWSExecutor, CloudJob, error_code
from .base import Job
from .polled import Life, Saw

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


_ARN = re.compile(r"arn:aws:braket:[a-z0-9-]*:\d*:device/[A-Za-z0-9_./-]+")


def parse_arn(text: str) -> str:
    if not _ARN.fullmatch(text.strip()):
        raise ValueError("a device ARN (arn:aws:braket:REGION::device/...)")
    return text.strip()


def _instance(text: str) -> str:
    if not re.fullmatch(r"ml\.[a-z0-9]+\.[a-z0-9]+", text.strip()):
        raise ValueError("an ML instance type, e.g. ml.m5.large")
    return text.strip()


SHOTS = Option("shots", parse_count, "shots per circuit, handed to the code as `shots`", "1000")
INSTANCE = Option("instance_type", _instance, "the Hybrid Job's instance (device ARNs)", "ml.m5.large")


@dataclass
class HybridJob(CloudJob):
    """job_id is the job's ARN; folder the task's S3 folder (under the prefix)."""

    name: str = ""
    stream: str = ""  # the CloudWatch log stream, once Braket created it

    @property
    def handle(self) -> dict[str, Any]:
        return {"job_arn": self.job_id, "job_name": self.name, "s3": self.folder}


class HybridExecutor(AWSExecutor[HybridJob]):
    kind = "hybrid"
    options = option_table(
        Option("device", parse_arn, "device ARN", "arn:aws:braket:us-east-1::device/qpu/ionq/Aria-1"), SHOTS, INSTANCE
    )
    device = Unicode("", help="Default device: a device ARN.")
    shots = Int(1000, help="Default shots, handed to the code as `shots`.")
    role_arn = Unicode("", help="IAM role the Hybrid Jobs run as (reads and writes the S3 prefix, uses the device).")
    image_uri = Unicode("", help="The Hybrid Jobs' container image (default: Braket's base job image).")
    instance_type = Unicode("ml.m5.large", help="Default instance of a Hybrid Job.")
    volume_size = Int(30, help="GB of storage for a Hybrid Job's instance.")

    NO_ROLE = "executor {!r} ({}) has no role_arn: Hybrid Jobs run as an IAM role (see docs/braket.md)"

    def __init__(self, name: str, reporter: Any, spool: Path, **settings: Any):
        super().__init__(name, reporter, spool, **settings)
        try:
            if self.device:
                self.options["device"].parse(self.device)
        except ValueError as err:
            raise SpecError(f"executor {name!r} ({self.kind}): device={self.device!r}: {err}") from None

    def context(self, job: Job) -> dict[str, Any]:
        """What the task's code is handed (the provider builds the device)."""
        return {"device": job.options.get("device", self.device), "shots": job.options.get("shots", self.shots)}

    # --------------------------------------------------------------------------- launch

    def groups(self, jobs: list[Job]) -> list[list[Job]]:
        return [[job] for job in jobs]  # a Hybrid Job runs one task

    async def launch(self, jobs: list[Job]) -> list[HybridJob | Exception]:
        [job] = jobs
        job.context = self.context(job)
        hybrid = HybridJob(job.task_id, folder=f"{job.task_id}-{uuid.uuid4().hex[:6]}")
        hybrid.name = f"hetflow-{hybrid.folder}"
        try:
            problem = self.problem() or ("" if self.role_arn else self.NO_ROLE.format(self.name, self.kind))
            if problem:
                raise AccessError(problem)
            source = bundle()  # checked for on every submission: a lifecycle rule may have expired it
            bundle_key = f"hetflow-braket-{sha256(source)[:12]}.tar.gz"
            await self.s3_ensure(bundle_key, source)
            manifest = await self.ship(hybrid.folder, [job])
            hybrid.job_id = await self._create(hybrid, job, manifest, bundle_key)
        except Exception:  # AWS refused, or credentials are missing: the task's error says which
            await self.cleanup(hybrid, False)
            raise
        return [hybrid]

    async def _create(self, hybrid: HybridJob, job: Job, manifest: str, bundle_key: str) -> str:
        output: dict[str, Any] = {"s3Path": self.s3_uri(f"{hybrid.folder}/output")}
        if self.kms_key_id:
            output["kmsKeyId"] = self.kms_key_id
        algorithm: dict[str, Any] = {
            "scriptModeConfig": {
                "entryPoint": "braket_entry:main",
                "s3Uri": self.s3_uri(bundle_key),
                "compressionType": "GZIP",
            }
        }
        if self.image_uri:
            algorithm["containerImage"] = {"uri": self.image_uri}
        request = {
            "clientToken": uuid.uuid4().hex,
            "jobName": hybrid.name,
            "roleArn": self.role_arn,
            "algorithmSpecification": algorithm,
            "outputDataConfig": output,
            "instanceConfig": {
                "instanceType": job.options.get("instance_type", self.instance_type),
                "volumeSizeInGb": self.volume_size,
                "instanceCount": 1,
            },
            "deviceConfig": {"device": job.context["device"]},
            "hyperParameters": {"hetflow_manifest": manifest},
            "tags": {"hetflow-task": job.task_id},
        }
        answer = await self.call("braket", "create_job", **request)
        return answer["jobArn"]

    def restore(self, task_id: str, handle: dict[str, Any]) -> HybridJob | None:
        if not handle.get("job_arn"):
            return None
        return HybridJob(task_id, handle["job_arn"], folder=handle.get("s3", ""), name=handle.get("job_name", ""))

    # --------------------------------------------------------------------------- follow

    async def poll(self, followed: list[HybridJob]) -> dict[str, Saw]:
        """GetJob for every job (Braket has no batched form); one job's trouble (throttling, a deleted job) does
        not hold up the others."""
        said = {}
        for hybrid in followed:
            try:
                answer = await self.call("braket", "get_job", jobArn=hybrid.job_id)
            except Exception as err:
                if error_code(err) == "ResourceNotFoundException":  # Braket no longer knows the job
                    said[hybrid.task_id] = Saw(Life.ENDED, log=False, detail={"status": "GONE"})
                else:
                    self.last_error = f"following {hybrid.name}: {type(err).__name__}: {err}"
                continue
            status = answer["status"]
            life = Life.ENDED if status in ENDED else Life.RUNNING if status == "RUNNING" else Life.WAITING
            started = hybrid.started or life is not Life.WAITING
            said[hybrid.task_id] = Saw(life, started, started, None, answer)
        return said

    async def read_log(self, job: HybridJob, saw: Saw) -> str:
        """New log lines; a log that cannot be read (permissions, throttling) is said once and does not keep the
        outcome from being collected."""
        try:
            if not job.stream:
                streams = await self.call(
                    "logs", "describe_log_streams", logGroupName=LOG_GROUP, logStreamNamePrefix=f"{job.name}/"
                )
                found = streams.get("logStreams", [])
                if not found:
                    return ""
                job.stream = found[0]["logStreamName"]
            text, job.log_token = await self.tail_log(LOG_GROUP, job.stream, job.log_token)
        except Exception as err:
            if error_code(err) != "ResourceNotFoundException":  # the account's first job: no log group yet
                self.last_error = f"reading the log of {job.name}: {type(err).__name__}: {err}"
            return ""
        return text

    async def why_ended(self, job: HybridJob, saw: Saw) -> str:
        if saw.detail["status"] == "GONE":
            return f"Braket job {job.name} ended GONE: Braket no longer knows the job (deleted, or another region)"
        reason = saw.detail.get("failureReason") or "it wrote no outcome"
        return f"Braket job {job.name} ended {saw.detail['status']}: {reason}"

    async def cleanup(self, job: HybridJob, ok: bool) -> None:
        """Delete the task's objects (best effort: a lifecycle rule on the prefix catches what is left)."""
        with contextlib.suppress(Exception):
            await self.s3_delete_folder(job.folder)

    async def cancel_job(self, job: HybridJob) -> None:
        await self.call("braket", "cancel_job", jobArn=job.job_id)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "device": self.device, "shots": self.shots, "hybrid_jobs": len(self.jobs)}
