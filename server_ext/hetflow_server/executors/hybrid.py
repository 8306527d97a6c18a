"""`hybrid`: tasks on a device ARN run in Amazon Braket Hybrid Jobs next to the device, in a warm job per device
and instance: a loop of N iterations starts one job, and its quantum tasks keep the job's priority access.

A warm job (`WarmJob`) is a hetflow worker (`braket_entry:main`, runner.run_s3_queue) that takes tasks from its S3
folder until idle for `keep_alive` seconds. Under the executor's prefix, per warm job FOLDER: `manifest.json` (what
the worker reads; the job's hyperparameter names it), `queue/SEQ-TASK-SHA256` (a queued task's job), `TASK.claim`
(who took the task: the worker, or the engine taking it back), `TASK.result`, `TASK.done`, and `closed` once the
worker takes no more. Once per engine version, a source bundle: the runner, the device provider, the entry point.

Following, per warm job and poll cycle: one `GetJob` (Braket has no batched form), one listing of its folder (which
tasks were claimed, which are done), one read of its CloudWatch log stream (`/aws/braket/jobs`, `JOBNAME/...`),
split into the tasks' logs at the worker's marks. A task's outcome is its done object; a task the worker had
claimed when the job ended without one fails with Braket's `failureReason` (its retries, if any, go to a new job);
a task no worker claimed is taken back and queued on a new job. Cancel takes a queued task back; a running one,
or a job's last task, cancels the job (`CancelJob`), whose other tasks go to a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import io
import json
import re
import tarfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from traitlets import Float, Int, Unicode

from .. import runner
from ..models import Option, option_table, parse_count, parse_seconds
from ..protocol import AccessError, SpecError, sha256
from . import braket_device, braket_entry
from .aws import AWSExecutor, CloudJob, error_code
from .base import Job
from .polled import Life, Saw, ends_with, options_key

ENDED = frozenset({"COMPLETED", "FAILED", "CANCELLED", "GONE"})  # GONE: Braket no longer knows the job
LOG_GROUP = "/aws/braket/jobs"
LOG_GRACE = 10.0  # seconds a done task waits for the end of its log to reach CloudWatch


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
KEEP_ALIVE = Option(
    "keep_alive",
    parse_seconds,
    "seconds a warm Hybrid Job waits for the next task once idle (device ARNs; default the executor's, 60)",
    "300",
)


@dataclass
class WarmJob:
    """One Hybrid Job taking tasks from its folder's queue; `closed` once it takes no more (its worker closed the
    queue, it ended, or it was cancelled)."""

    key: str  # the device and instance it runs on ("" for a job of an engine before warm jobs)
    folder: str
    arn: str = ""
    status: str = ""  # Braket's last word on it
    closed: bool = False
    ran: bool = False  # its worker took a task: it started, so a task it never took may go to another job
    cancelled: bool = False  # by this engine (its tasks not yet taken go to another job)
    stream: str = ""  # its CloudWatch log stream, once Braket created it
    log_token: str | None = None
    inside: str = ""  # the task whose output the log is in, between the worker's marks
    logs: dict[str, str] = field(default_factory=dict)  # task -> log read and not yet reported
    marked: set[str] = field(default_factory=set)  # tasks whose log's end mark was read

    @property
    def name(self) -> str:
        return f"hetflow-{self.folder}"

    def split(self, text: str) -> None:
        """The tasks' logs out of the job's log."""
        for line in text.splitlines(keepends=True):
            if line.startswith(runner.TASK_MARK):
                self.inside = line.removeprefix(runner.TASK_MARK).strip()
            elif line.startswith(runner.TASK_END_MARK):
                self.marked.add(line.removeprefix(runner.TASK_END_MARK).strip())
                self.inside = ""
            elif self.inside:
                self.logs[self.inside] = self.logs.get(self.inside, "") + line


@dataclass
class HybridJob(CloudJob):
    """One task on a warm job; job_id is the job's ARN, folder the job's folder."""

    warm: WarmJob = field(default_factory=lambda: WarmJob("", ""))
    queued: str = ""  # its job's key in the queue
    job: Job | None = None  # to queue it on another warm job (None after an engine restart)
    done_at: float = 0.0  # when its done object was first seen

    @property
    def handle(self) -> dict[str, Any]:
        warm = self.warm
        return {
            "job_arn": self.job_id,
            "job_name": warm.name,
            "s3": self.folder,
            "queued": self.queued,
            "warm": warm.key,
        }


class HybridExecutor(AWSExecutor[HybridJob]):
    kind = "hybrid"
    options = option_table(
        Option("device", parse_arn, "device ARN", "arn:aws:braket:us-east-1::device/qpu/ionq/Aria-1"),
        SHOTS,
        INSTANCE,
        KEEP_ALIVE,
    )
    device = Unicode("", help="Default device: a device ARN.")
    shots = Int(1000, help="Default shots, handed to the code as `shots`.")
    role_arn = Unicode("", help="IAM role the Hybrid Jobs run as (reads and writes the S3 prefix, uses the device).")
    image_uri = Unicode("", help="The Hybrid Jobs' container image (default: Braket's base job image).")
    instance_type = Unicode("ml.m5.large", help="Default instance of a Hybrid Job.")
    volume_size = Int(30, help="GB of storage for a Hybrid Job's instance.")
    keep_alive = Float(60.0, help="Seconds a warm Hybrid Job waits for the next task once idle (0: none).")
    poll_interval = Float(1.0, help="Seconds between two polls of the warm jobs (one GetJob and one S3 listing each).")

    NO_ROLE = "executor {!r} ({}) has no role_arn: Hybrid Jobs run as an IAM role (see docs/braket.md)"

    def __init__(self, name: str, reporter: Any, spool: Path, **settings: Any):
        super().__init__(name, reporter, spool, **settings)
        try:
            if self.device:
                self.options["device"].parse(self.device)
        except ValueError as err:
            raise SpecError(f"executor {name!r} ({self.kind}): device={self.device!r}: {err}") from None
        self._warm: dict[str, WarmJob] = {}  # device and instance -> the warm job new tasks join
        self._known: dict[str, WarmJob] = {}  # ARN -> warm job, while it has tasks or takes them

    def context(self, job: Job) -> dict[str, Any]:
        """What the task's code is handed (the provider builds the device)."""
        return {"device": job.options.get("device", self.device), "shots": job.options.get("shots", self.shots)}

    # --------------------------------------------------------------------------- launch

    async def launch(self, jobs: list[Job]) -> list[HybridJob | Exception]:
        problem = self.problem() or ("" if self.role_arn else self.NO_ROLE.format(self.name, self.kind))
        if problem:
            raise AccessError(problem)
        source = bundle()  # checked for on every submission: a lifecycle rule may have expired it
        bundle_key = f"hetflow-braket-{sha256(source)[:12]}.tar.gz"
        await self.s3_ensure(bundle_key, source)
        for job in jobs:
            job.context = self.context(job)  # in the job the runner reads
        queued: list[HybridJob | Exception] = []
        for job, data in zip(jobs, await self.envelopes(jobs), strict=True):
            try:
                queued.append(await self._queue(job, data, bundle_key))
            except Exception as err:  # AWS refused: the task's error says why
                queued.append(err)
        return queued

    async def _queue(self, job: Job, data: bytes, bundle_key: str) -> HybridJob:
        """Queue the task on the warm job of its device and instance, a new one if none takes tasks; a job whose
        worker closed its queue meanwhile gets it back unless the worker took it."""
        key = options_key({"device": job.context["device"], "instance": job.options.get("instance_type")})
        warm = self._warm.get(key)
        if warm is None or warm.closed:
            if warm is not None:
                await self._forget(warm)
            warm = self._warm[key] = await self._create(key, job, bundle_key)
        record = HybridJob(job.task_id, warm.arn, folder=warm.folder, warm=warm, job=job)
        record.queued = f"{warm.folder}/queue/{time.time_ns():020d}-{job.task_id}-{sha256(data)}"
        await self.s3_put(record.queued, data)
        if await self.s3_has(f"{warm.folder}/closed") and await self._take_back(record):
            warm.closed = True
            return await self._queue(job, data, bundle_key)
        return record

    async def _take_back(self, record: HybridJob) -> bool:
        """Claim a queued task for the engine; False if the worker claimed it first (it runs there)."""
        claim = self.s3_key(f"{record.paths.base}.claim")
        args = (self._client("s3"), self.bucket, claim, self.sse_args, "engine")
        if not await asyncio.to_thread(runner.claim_s3, *args):
            return False
        with contextlib.suppress(Exception):
            await self.s3_delete([record.queued])
        return True

    async def _create(self, key: str, job: Job, bundle_key: str) -> WarmJob:
        warm = WarmJob(key, f"warm-{uuid.uuid4().hex[:12]}")
        manifest = {
            "bucket": self.bucket,
            "sse": self.sse_args,
            "folder": self.s3_key(warm.folder),
            "keep_alive": job.options.get("keep_alive", self.keep_alive),
        }
        await self.s3_put(f"{warm.folder}/manifest.json", json.dumps(manifest).encode())
        output: dict[str, Any] = {"s3Path": self.s3_uri(f"{warm.folder}/output")}
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
            "jobName": warm.name,
            "roleArn": self.role_arn,
            "algorithmSpecification": algorithm,
            "outputDataConfig": output,
            "instanceConfig": {
                "instanceType": job.options.get("instance_type", self.instance_type),
                "volumeSizeInGb": self.volume_size,
                "instanceCount": 1,
            },
            "deviceConfig": {"device": job.context["device"]},
            "hyperParameters": {"hetflow_queue": self.s3_uri(f"{warm.folder}/manifest.json")},
            "tags": {"hetflow-executor": self.name},
        }
        try:
            warm.arn = (await self.call("braket", "create_job", **request))["jobArn"]
        except Exception:
            with contextlib.suppress(Exception):
                await self.s3_delete_folder(warm.folder)
            raise
        self._known[warm.arn] = warm
        return warm

    async def _forget(self, warm: WarmJob) -> None:
        """A closed job none of whose tasks is followed: its objects go (best effort: a lifecycle rule on the
        prefix catches what is left)."""
        if any(record.warm is warm for record in self.jobs.values()):
            return
        self._known.pop(warm.arn, None)
        if self._warm.get(warm.key) is warm:
            del self._warm[warm.key]
        with contextlib.suppress(Exception):
            await self.s3_delete_folder(warm.folder)

    def restore(self, task_id: str, handle: dict[str, Any]) -> HybridJob | None:
        if not handle.get("job_arn"):
            return None
        arn, folder = handle["job_arn"], handle.get("s3", "")
        warm = self._known.get(arn) or WarmJob(handle.get("warm", ""), folder, arn=arn)
        self._known[arn] = warm
        if warm.key:  # new tasks may join it while it takes them
            self._warm.setdefault(warm.key, warm)
        return HybridJob(task_id, arn, folder=folder, warm=warm, queued=handle.get("queued", ""))

    # --------------------------------------------------------------------------- follow

    async def poll(self, followed: list[HybridJob]) -> dict[str, Saw]:
        """Per warm job: GetJob, a listing of its folder, its log; one job's trouble (throttling, a deleted job)
        does not hold up the others."""
        said: dict[str, Saw] = {}
        by_job: dict[str, list[HybridJob]] = {}
        for record in followed:
            by_job.setdefault(record.job_id, []).append(record)
        for records in by_job.values():
            warm = records[0].warm
            try:
                answer = await self._described(warm)
                names = await self._names(warm.folder)
                warm.ran |= any(f"{record.task_id}.claim" in names for record in records)
                if warm.status != "QUEUED":
                    warm.split(await self._read_job_log(warm))
            except Exception as err:
                self.last_error = f"following {warm.name}: {type(err).__name__}: {err}"
                continue
            for record in records:
                saw = await self._saw(record, names, answer)
                if saw is not None:
                    said[record.task_id] = saw
        return said

    async def _described(self, warm: WarmJob) -> dict[str, Any]:
        try:
            answer = await self.call("braket", "get_job", jobArn=warm.arn)
        except Exception as err:
            if error_code(err) != "ResourceNotFoundException":
                raise
            answer = {"status": "GONE"}
        warm.status = answer["status"]
        warm.closed |= warm.status in ENDED or warm.status == "CANCELLING"
        return answer

    async def _names(self, folder: str) -> set[str]:
        def blocking() -> set[str]:
            pages = self._client("s3").get_paginator("list_objects_v2")
            prefix = self.s3_key(folder) + "/"
            found = pages.paginate(Bucket=self.bucket, Prefix=prefix)
            return {o["Key"][len(prefix) :] for page in found for o in page.get("Contents", [])}

        return await asyncio.to_thread(blocking)

    async def _saw(self, record: HybridJob, names: set[str], answer: dict[str, Any]) -> Saw | None:
        """What the job's state and folder say of one task. A task an ended job never took goes to a new job if
        that one ran (a killed container, a cancel): one that failed to start fails its tasks with its reason
        instead of starting job after job. None: the task is no longer this record's."""
        claimed, done = f"{record.task_id}.claim" in names, f"{record.task_id}.done" in names
        warm, ended = record.warm, answer["status"] in ENDED  # this poll's answer, not a later poll's
        movable = ended and not (claimed or done) and (warm.ran or warm.cancelled) and record.job is not None
        if movable and await self._take_back(record):
            await self._move(record)
            return None
        if done and not record.done_at:
            record.done_at = time.monotonic()
        logged = ended or record.task_id in record.warm.marked or time.monotonic() - record.done_at > LOG_GRACE
        life = Life.ENDED if ended else Life.RUNNING if claimed else Life.WAITING
        return Saw(life, claimed or done, True, done and logged, {**answer, "claimed": claimed})

    async def _move(self, record: HybridJob) -> None:
        job = record.job
        assert job is not None
        try:
            moved: list[HybridJob | Exception] = await self.launch([job])
        except Exception as err:  # AWS refused, credentials are gone
            moved = [err]
        await self._take([job], moved)

    async def _read_job_log(self, warm: WarmJob) -> str:
        """New lines of the job's log; a log that cannot be read (permissions, throttling) is said and does not
        keep the outcomes from being collected."""
        try:
            if not warm.stream:
                streams = await self.call(
                    "logs", "describe_log_streams", logGroupName=LOG_GROUP, logStreamNamePrefix=f"{warm.name}/"
                )
                found = streams.get("logStreams", [])
                if not found:
                    return ""
                warm.stream = found[0]["logStreamName"]
            text, warm.log_token = await self.tail_log(LOG_GROUP, warm.stream, warm.log_token)
        except Exception as err:
            if error_code(err) != "ResourceNotFoundException":  # the account's first job: no log group yet
                self.last_error = f"reading the log of {warm.name}: {type(err).__name__}: {err}"
            return ""
        return text

    async def read_log(self, job: HybridJob, saw: Saw) -> str:
        return job.warm.logs.pop(job.task_id, "")

    async def why_ended(self, job: HybridJob, saw: Saw) -> str:
        status, name = saw.detail["status"], job.warm.name
        if status == "GONE":
            return f"Braket job {name} ended GONE: Braket no longer knows the job (deleted, or another region)"
        reason = saw.detail.get("failureReason") or "it wrote no outcome"
        if not saw.detail["claimed"]:
            return f"Braket job {name} ended {status} before it took the task: {reason}"
        return f"Braket job {name} ended {status} while the task ran: {reason}{ends_with(job.tail)}"

    async def cleanup(self, job: HybridJob, ok: bool) -> None:
        """Delete the task's objects (best effort: a lifecycle rule on the prefix catches what is left), and a
        closed job's once it has no task left."""
        base = job.paths.base
        with contextlib.suppress(Exception):
            await self.s3_delete([job.queued, f"{base}.claim", f"{base}.result", f"{base}.done"])
        job.warm.marked.discard(job.task_id)
        job.warm.logs.pop(job.task_id, None)
        if job.warm.closed:
            await self._forget(job.warm)

    async def cancel_job(self, job: HybridJob) -> None:
        """A queued task is taken back; a running one, or the job's last, cancels the job (a loop's cancel)."""
        alone = not any(record.warm is job.warm for record in self.jobs.values())
        if await self._take_back(job) and not alone:
            return
        if not job.warm.closed:
            job.warm.closed = job.warm.cancelled = True
            await self.call("braket", "cancel_job", jobArn=job.job_id)

    def describe(self) -> dict[str, Any]:
        warm = sum(not job.closed for job in self._known.values())
        return {**super().describe(), "device": self.device, "shots": self.shots, "hybrid_jobs": warm}
