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

import asyncio
import contextlib
import hashlib
import json
import math
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from traitlets import Float, Unicode

from ..models import Option, option_table, parse_count
from .aws import AWSExecutor
from .base import Job
from .remote import RUNNER_SOURCE

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
RUNNER_SHA256 = hashlib.sha256(RUNNER_SOURCE).hexdigest()


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
class BatchJob:
    task_id: str
    folder: str  # the submission's S3 folder, under the prefix
    job_id: str = ""  # JOBID, or JOBID:INDEX for an array child
    started: bool = False
    token: str | None = None  # where its log was read up to
    tail: str = ""  # the end of its log, quoted when it ends without an outcome
    succeeded_at: float | None = None  # when it was first seen SUCCEEDED without a done object
    followed_at: float = field(default_factory=time.monotonic)
    seen: bool = False  # describe_jobs has answered for it (right after submit_job it may not yet)

    @property
    def handle(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "s3": self.folder}


class BatchExecutor(AWSExecutor):
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
        self.jobs: dict[str, BatchJob] = {}
        self._folders: dict[str, set[str]] = {}  # folder -> tasks still followed (the folder goes with the last)
        self._launching: set[str] = set()
        self._cancelled: set[str] = set()
        self._cleaning: set[asyncio.Task[None]] = set()  # deletions after an outcome; close() lets them end

    # --------------------------------------------------------------------------- submit

    async def submit(self, jobs: list[Job]) -> None:
        groups: dict[str, list[Job]] = {}
        for job in jobs:
            request = self._request(job.options)
            if isinstance(request, str):
                self.reporter.finished(job.task_id, None, {"type": "SpecError", "message": request})
                continue
            groups.setdefault(json.dumps(request, sort_keys=True), []).append(job)
        for request, members in groups.items():
            for start in range(0, len(members), MAX_ARRAY):
                await self._launch(json.loads(request), members[start : start + MAX_ARRAY])
        self.follow()

    def _request(self, options: dict[str, Any]) -> dict[str, Any] | str:
        """submit_job's queue, definition and resources for these options, or what is missing."""
        queue = options.get("job_queue", self.job_queue)
        definition = options.get("job_definition", self.job_definition)
        for name, value in (("job_queue", queue), ("job_definition", definition)):
            if not value:
                return f"no {name}: set it in executor {self.name!r}'s settings or as a cell option ({name}=...)"
        needs = [{"type": kind, "value": str(options[name])} for name, kind in RESOURCES.items() if options.get(name)]
        return {"jobQueue": queue, "jobDefinition": definition, "resourceRequirements": needs}

    async def _launch(self, request: dict[str, Any], jobs: list[Job]) -> None:
        """One submit_job for these jobs: a plain job for one, an array job for more."""
        folder = uuid.uuid4().hex[:12]  # a folder per attempt: a retry must not find the last attempt's outcome
        ids = {job.task_id for job in jobs}
        self._launching |= ids
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
        except Exception as err:  # no credentials, AWS refused, an upstream result is gone: each task says why
            self._cancelled -= ids
            error = {"type": type(err).__name__, "message": str(err)}
            with self.reporter.batch():
                for job in jobs:
                    self.reporter.finished(job.task_id, None, error)
            with contextlib.suppress(Exception):
                await self.s3_delete_folder(folder)
            return
        finally:
            self._launching -= ids
        parent = answer["jobId"]
        followed = [BatchJob(job.task_id, folder, f"{parent}:{n}" if size else parent) for n, job in enumerate(jobs)]
        self._folders[folder] = set(ids)
        for job in [job for job in followed if job.task_id in self._cancelled]:  # cancelled while being submitted
            self._cancelled.discard(job.task_id)
            followed.remove(job)
            with contextlib.suppress(Exception):  # the task is cancelled for the scheduler all the same
                await self._terminate(job)
        with self.reporter.batch():
            for job in followed:
                self.jobs[job.task_id] = job
                self.reporter.submitted(job.task_id, job.handle)

    async def reattach(self, task_id: str, handle: dict[str, Any]) -> None:
        # `started` is reported again once the job is seen running; a task already running ignores it
        job = BatchJob(task_id, str(handle.get("s3", "")), str(handle.get("job_id", "")))
        if not job.job_id or not job.folder:
            self.reporter.lost(task_id, f"its handle names no AWS Batch job: {handle}")
            return
        self.jobs[task_id] = job
        self._folders.setdefault(job.folder, set()).add(task_id)
        self.follow()

    # --------------------------------------------------------------------------- follow

    def following(self) -> list[str]:
        return list(self.jobs)

    async def poll_once(self) -> None:
        followed = list(self.jobs.values())
        ids = [job.job_id for job in followed]
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(ids), MAX_DESCRIBE):
            answer = await self.call("batch", "describe_jobs", jobs=ids[start : start + MAX_DESCRIBE])
            found.update((described["jobId"], described) for described in answer.get("jobs", []))
        await asyncio.gather(*(self._check(job, found.get(job.job_id)) for job in followed))

    async def _check(self, job: BatchJob, described: dict[str, Any] | None) -> None:
        """One job after describe_jobs said `described` (None: Batch does not know it)."""
        job.seen = job.seen or described is not None
        if described is None and not job.seen and time.monotonic() - job.followed_at < UNSEEN_GRACE:
            return  # just submitted: describe_jobs does not know it yet
        status = described["status"] if described else None
        if not job.started and described and (status == "RUNNING" or (status in ENDED and "startedAt" in described)):
            job.started = True
            self.reporter.started(job.task_id, job.handle)
        container = (described or {}).get("container", {})
        if container.get("logStreamName"):
            await self._read_log(job, container)
        if described is not None and status not in ENDED:
            return
        result, error = await self.outcome(job.folder, job.task_id)
        if result is None and error is None:
            if status == "SUCCEEDED":
                job.succeeded_at = job.succeeded_at or time.monotonic()
                if time.monotonic() - job.succeeded_at < self.outcome_grace:
                    return
            error = {"type": "JobEnded", "message": self._ended_without_outcome(job, described)}
        if self.jobs.get(job.task_id) is job:  # not cancelled, nor run again, meanwhile
            self.end(job.task_id, result, error)

    async def _read_log(self, job: BatchJob, container: dict[str, Any]) -> None:
        """New log lines; a log that cannot be read (permissions, throttling) does not keep the outcome from being
        collected: the trouble shows in the executor's health."""
        group = container.get("logConfiguration", {}).get("options", {}).get("awslogs-group", self.log_group)
        try:
            text, job.token = await self.tail_log(group, container["logStreamName"], job.token)
        except Exception as err:
            self.last_error = f"reading the log of job {job.job_id} in {group}: {type(err).__name__}: {err}"
            return
        if text and self.jobs.get(job.task_id) is job:
            job.tail = (job.tail + text)[-1500:]
            self.reporter.log(job.task_id, "stdout", text)

    def _ended_without_outcome(self, job: BatchJob, described: dict[str, Any] | None) -> str:
        if described is None:
            said = f"AWS Batch no longer knows job {job.job_id}, and the task left no outcome"
        else:
            container = described.get("container", {})
            reasons = [described.get("statusReason"), container.get("reason")]
            if container.get("exitCode") is not None:
                reasons.append(f"exit code {container['exitCode']}")
            why = "; ".join(str(r) for r in reasons if r) or "no reason given"
            said = f"AWS Batch job {job.job_id} ended {described['status']} ({why}) before the task wrote its outcome"
            if described["status"] == "SUCCEEDED":
                said += f" (none within outcome_grace={self.outcome_grace:g} s)"
        return said + (f"; its log ends with: {job.tail.strip()}" if job.tail.strip() else "")

    def end(self, task_id: str, result: bytes | None, error: dict[str, str] | None) -> None:
        job = self.jobs.pop(task_id, None)
        if job is not None:
            self.reporter.finished(task_id, result, error)  # first: the objects are the outcome until it is stored
            cleaning = asyncio.get_running_loop().create_task(self._forget(job))
            self._cleaning.add(cleaning)
            cleaning.add_done_callback(self._cleaning.discard)

    async def _forget(self, job: BatchJob) -> None:
        """Delete the task's objects, and its submission's folder with the last of its tasks."""
        members = self._folders.get(job.folder, set())
        members.discard(job.task_id)
        if members:
            await self.forget_task(job.folder, job.task_id)
            return
        self._folders.pop(job.folder, None)
        with contextlib.suppress(Exception):  # best effort: a lifecycle rule on the prefix catches what is left
            await self.s3_delete_folder(job.folder)

    # --------------------------------------------------------------------------- control

    async def cancel(self, task_id: str) -> None:
        if task_id in self._launching:
            self._cancelled.add(task_id)
        job = self.jobs.pop(task_id, None)
        if job is not None:
            await self._terminate(job)

    async def _terminate(self, job: BatchJob) -> None:
        try:
            await self.call("batch", "terminate_job", jobId=job.job_id, reason=CANCEL_REASON)
        finally:
            await self._forget(job)

    def describe(self) -> dict[str, Any]:
        shown = {"job_queue": self.job_queue, "job_definition": self.job_definition, "jobs": len(self.jobs)}
        return {**super().describe(), **shown}

    async def check(self) -> dict[str, Any]:
        """Also a round trip to Batch: the default job queue exists."""
        shown = await super().check()
        if not shown["healthy"] or not self.job_queue:
            return shown
        try:
            queues = await self.call("batch", "describe_job_queues", jobQueues=[self.job_queue])
        except Exception as err:
            return {**shown, "healthy": False, "error": f"{type(err).__name__}: {err}"}
        if not queues.get("jobQueues"):
            return {**shown, "healthy": False, "error": f"no job queue {self.job_queue!r} in {self.region_name}"}
        return shown

    async def close(self) -> None:
        await super().close()
        if self._cleaning:
            await asyncio.wait(self._cleaning, timeout=10)
