"""`batch`: each task an AWS Batch job; the tasks of one submission that ask for the same queue, job definition and
resources (a foreach, ready cells handed over together) go out as ONE array job, child N running task N.

The engine uploads the runner once (`runner-HASH.py` under `s3_prefix`) and, per submission, the tasks' jobs and
a manifest (aws.py); the container command is a few lines of `python -c` that fetch the runner with the job's own
role, check its hash and run `runner.run_s3(MANIFEST)`: the image needs Python, cloudpickle and boto3, nothing of
hetflow. One poll cycle follows every job: `describe_jobs` (at most 100 ids a call), then each running job's log
from CloudWatch Logs, then the done objects of the jobs that ended. Cancel is `terminate_job` (it also cancels a job
that has not started). A task's objects are deleted once its outcome is collected.

Why Batch is asked before S3, and why a SUCCEEDED job may wait: the container writes its done object before it
exits, and S3 reads are strongly consistent, so a job Batch said had ended either has its done object or never
will. A FAILED one without it is reported at once, with Batch's reasons and the end of its log. A SUCCEEDED one is
given `outcome_grace` seconds instead: on AWS it cannot lack the object (the runner exits 0 only after writing it),
but moto's Batch marks jobs SUCCEEDED without running anything (the tests then play the container), and an
S3-compatible store may be slower to show what was written.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from traitlets import Float, Unicode

from ..models import Option, option_table, parse_count
from ..protocol import SpecError
from ..shipping import RUNNER_SHA256
from .aws import AWSExecutor, CloudJob
from .base import Job
from .polled import Life, Saw, ends_with

MAX_DESCRIBE = 100  # ids per describe_jobs call
UNSEEN_GRACE = 60.0  # seconds a job just submitted may be missing from describe_jobs (it is eventually consistent)
MAX_ARRAY = 10_000  # children of one array job
ENDED = frozenset({"SUCCEEDED", "FAILED"})
RESOURCES = {"vcpus": "VCPU", "memory": "MEMORY", "gpus": "GPU"}  # cell option -> Batch resource type
CANCEL_REASON = "cancelled in hetflow"  # terminate_job's reason, shown by Batch

# The container's command, after `python -c`: MANIFEST_URI BUCKET RUNNER_KEY RUNNER_SHA256.
BOOTSTRAP = """\
import hashlib, sys, boto3
manifest, bucket, key, digest = sys.argv[1:5]
source = boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
if hashlib.sha256(source).hexdigest() != digest:
    sys.exit(f"hetflow: s3://{bucket}/{key} does not match its hash")
runner = {"__name__": "hetflow_runner"}
exec(compile(source, key, "exec"), runner)
sys.exit(runner["run_s3"](manifest))
"""


def _vcpus(text: str) -> str:
    try:
        value = float(text)
    except ValueError:
        raise ValueError("expected a number of vCPUs") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError("must be more than 0 (fractions such as 0.5 on Fargate)")
    return f"{value:g}"


def _mib(text: str) -> int:
    value = parse_count(text)
    if value == 0:
        raise ValueError("must be at least 1 (MiB)")
    return value


def _name_or_arn(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_:/.\-]{1,255}", text.strip()):
        raise ValueError("a name, name:revision or ARN (letters, digits, _ : / . -)")
    return text.strip()


@dataclass
class BatchJob(CloudJob):
    """job_id is JOBID, or JOBID:INDEX for an array child; folder the submission's S3 folder, under the prefix."""

    succeeded_at: float | None = None  # when it was first seen SUCCEEDED without a done object
    followed_at: float = field(default_factory=time.monotonic)
    seen: bool = False  # describe_jobs has answered for it (right after submit_job it may not yet)

    @property
    def handle(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "s3": self.folder}


class BatchExecutor(AWSExecutor[BatchJob]):
    kind = "batch"
    options = option_table(
        Option("vcpus", _vcpus, "vCPUs for the container", "2"),
        Option("memory", _mib, "memory for the container, in MiB", "4096"),
        Option("gpus", parse_count, "GPUs for the container", "1"),
        Option("job_queue", _name_or_arn, "AWS Batch job queue (name or ARN)", "gpu-queue"),
        Option("job_definition", _name_or_arn, "job definition (name, name:revision or ARN)", "hetflow:3"),
    )
    job_queue = Unicode("", help="Default job queue (name or ARN).")
    job_definition = Unicode("", help="Default job definition: an image with Python, cloudpickle and boto3.")
    python = Unicode("python3", help="Python in the job definition's image.")
    log_group = Unicode("/aws/batch/job", help="CloudWatch Logs group of the jobs (unless their definition says).")
    outcome_grace = Float(30.0, help="Seconds a SUCCEEDED job may go without its done object before it fails.")

    def __init__(self, name: str, reporter: Any, spool: Any, **settings: Any):
        super().__init__(name, reporter, spool, **settings)
        self._folders: dict[str, set[str]] = {}  # folder -> tasks still followed (the folder goes with the last)

    # --------------------------------------------------------------------------- launch

    def groups(self, jobs: list[Job]) -> list[list[Job]]:
        """One array job per request (queue, definition, resources), at most MAX_ARRAY children each; a job whose
        request is incomplete is a group of its own (its launch says what is missing)."""
        by_request: dict[str, list[Job]] = {}
        for job in jobs:
            request = self._request(job.options)
            key = json.dumps(request, sort_keys=True) if isinstance(request, dict) else job.task_id
            by_request.setdefault(key, []).append(job)
        return [
            members[at : at + MAX_ARRAY] for members in by_request.values() for at in range(0, len(members), MAX_ARRAY)
        ]

    def _request(self, options: dict[str, Any]) -> dict[str, Any] | str:
        """submit_job's queue, definition and resources for these options, or what is missing."""
        queue = options.get("job_queue", self.job_queue)
        definition = options.get("job_definition", self.job_definition)
        for name, value in (("job_queue", queue), ("job_definition", definition)):
            if not value:
                return f"no {name}: set it in executor {self.name!r}'s settings or as a cell option ({name}=...)"
        needs = [{"type": kind, "value": str(options[name])} for name, kind in RESOURCES.items() if options.get(name)]
        return {"jobQueue": queue, "jobDefinition": definition, "resourceRequirements": needs}

    async def launch(self, jobs: list[Job]) -> list[BatchJob | Exception]:
        """One submit_job for these jobs: a plain job for one, an array job for more."""
        request = self._request(jobs[0].options)
        if isinstance(request, str):
            raise SpecError(request)
        folder = uuid.uuid4().hex[:12]  # a folder per attempt: a retry must not find the last attempt's outcome
        try:
            runner_key = await self.upload_runner()
            manifest = await self.ship(folder, jobs)
            overrides = {
                "command": [self.python, "-c", BOOTSTRAP, manifest, self.bucket, runner_key, RUNNER_SHA256],
                "environment": [{"name": "AWS_DEFAULT_REGION", "value": self.region_name}],
                "resourceRequirements": request.pop("resourceRequirements"),
            }
            size = {"arrayProperties": {"size": len(jobs)}} if len(jobs) > 1 else {}
            answer = await self.call(
                "batch", "submit_job", jobName=f"hetflow-{folder}", containerOverrides=overrides, **request, **size
            )
        except Exception:  # no credentials, AWS refused, an upstream result is gone: nothing is left behind
            with contextlib.suppress(Exception):
                await self.s3_delete_folder(folder)
            raise
        parent = answer["jobId"]
        self._folders[folder] = {job.task_id for job in jobs}
        return [BatchJob(job.task_id, f"{parent}:{n}" if size else parent, folder=folder) for n, job in enumerate(jobs)]

    def restore(self, task_id: str, handle: dict[str, Any]) -> BatchJob | None:
        job = BatchJob(task_id, str(handle.get("job_id", "")), folder=str(handle.get("s3", "")))
        if not job.job_id or not job.folder:
            return None
        self._folders.setdefault(job.folder, set()).add(task_id)
        return job

    # --------------------------------------------------------------------------- follow

    async def poll(self, followed: list[BatchJob]) -> dict[str, Saw]:
        ids = [job.job_id for job in followed]
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(ids), MAX_DESCRIBE):
            answer = await self.call("batch", "describe_jobs", jobs=ids[start : start + MAX_DESCRIBE])
            found.update((described["jobId"], described) for described in answer.get("jobs", []))
        return {job.task_id: self._saw(job, found.get(job.job_id)) for job in followed}

    def _saw(self, job: BatchJob, described: dict[str, Any] | None) -> Saw:
        """What describe_jobs said of one job (None: Batch does not know it)."""
        job.seen = job.seen or described is not None
        if described is None:
            if not job.seen and time.monotonic() - job.followed_at < UNSEEN_GRACE:
                return Saw(Life.WAITING, log=False)  # just submitted: describe_jobs does not know it yet
            return Saw(Life.ENDED, log=False)
        status = described["status"]
        life = Life.ENDED if status in ENDED else Life.RUNNING if status == "RUNNING" else Life.WAITING
        started = status == "RUNNING" or (life is Life.ENDED and "startedAt" in described)
        return Saw(life, started, bool(described.get("container", {}).get("logStreamName")), None, described)

    async def read_log(self, job: BatchJob, saw: Saw) -> str:
        """New log lines; a log that cannot be read (permissions, throttling) does not keep the outcome from being
        collected: the trouble shows in the executor's health."""
        container = saw.detail.get("container", {})
        group = container.get("logConfiguration", {}).get("options", {}).get("awslogs-group", self.log_group)
        try:
            text, job.log_token = await self.tail_log(group, container["logStreamName"], job.log_token)
        except Exception as err:
            self.last_error = f"reading the log of job {job.job_id} in {group}: {type(err).__name__}: {err}"
            return ""
        return text

    async def why_ended(self, job: BatchJob, saw: Saw) -> str | None:
        described = saw.detail
        if described is None:
            return f"AWS Batch no longer knows job {job.job_id}, and the task left no outcome" + ends_with(job.tail)
        if described["status"] == "SUCCEEDED":  # see the module's docstring: give the done object a grace
            job.succeeded_at = job.succeeded_at or time.monotonic()
            if time.monotonic() - job.succeeded_at < self.outcome_grace:
                return None
        container = described.get("container", {})
        reasons = [described.get("statusReason"), container.get("reason")]
        if container.get("exitCode") is not None:
            reasons.append(f"exit code {container['exitCode']}")
        why = "; ".join(str(r) for r in reasons if r) or "no reason given"
        said = f"AWS Batch job {job.job_id} ended {described['status']} ({why}) before the task wrote its outcome"
        if described["status"] == "SUCCEEDED":
            said += f" (none within outcome_grace={self.outcome_grace:g} s)"
        return said + ends_with(job.tail)

    async def cleanup(self, job: BatchJob, ok: bool) -> None:
        """Delete the task's objects, and its submission's folder with the last of its tasks (best effort: a
        lifecycle rule on the prefix catches what is left)."""
        members = self._folders.get(job.folder, set())
        members.discard(job.task_id)
        with contextlib.suppress(Exception):
            if members:
                await self.s3_delete([f"{job.folder}/{job.task_id}.{name}" for name in ("job", "result", "done")])
                return
            self._folders.pop(job.folder, None)
            await self.s3_delete_folder(job.folder)

    # --------------------------------------------------------------------------- control

    async def cancel_job(self, job: BatchJob) -> None:
        await self.call("batch", "terminate_job", jobId=job.job_id, reason=CANCEL_REASON)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "job_queue": self.job_queue, "job_definition": self.job_definition}

    async def reach(self) -> str | None:
        """Also a round trip to Batch: the default job queue exists."""
        problem = await super().reach()
        if problem or not self.job_queue:
            return problem
        queues = await self.call("batch", "describe_job_queues", jobQueues=[self.job_queue])
        return None if queues.get("jobQueues") else f"no job queue {self.job_queue!r} in {self.region_name}"
