"""The braket executor on a device ARN: the task as an Amazon Braket Hybrid Job.

Braket cannot be reached from here and moto has no Braket: the engine's braket client is wrapped in botocore's
`Stubber`, which checks every request against the real API model and answers in turn (CreateJob, GetJob through
QUEUED -> RUNNING -> COMPLETED, CancelJob). Everything else is real: the job's objects go to moto's S3 (on
loopback), its log to moto's CloudWatch Logs, and the job itself is played by the bundle the engine uploaded — its
entry point and runner, run as the job's container would run them, with a LocalSimulator standing in for the QPU
(an AwsDevice needs the real service). The poll loop is driven by hand (`poll_once`), one stubbed GetJob each.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import subprocess
import sys
import tarfile
import time
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from botocore.stub import ANY, Stubber

import engines
from aws import REGION, Moto
from engines import outputs, run, settle, submit
from hetflow_server.engine import Engine
from hetflow_server.models import State, Task

pytestmark = pytest.mark.timeout(90)

BUCKET = "hetflow-braket"
DEVICE = "arn:aws:braket:us-east-1::device/qpu/ionq/Aria-1"
ROLE = "arn:aws:iam::123456789012:role/service-role/AmazonBraketJobsExecutionRole"
JOB_ARN = "arn:aws:braket:us-east-1:123456789012:job/hetflow-abc"
LOG_GROUP = "/aws/braket/jobs"

BELL = """\
from braket.circuits import Circuit
print(f"on {device.name} with {shots} shots")
counts = dict(device.run(Circuit().h(0).cnot(0, 1), shots=shots).result().measurement_counts)
"""


@pytest.fixture
def moto(moto_url: str) -> Moto:
    moto = Moto(moto_url)
    moto.reset()
    moto.client("s3").create_bucket(Bucket=BUCKET)
    return moto


@contextlib.asynccontextmanager
async def running(
    tmp_path: Path, moto: Moto, kind: str = "braket", **extra: Any
) -> AsyncIterator[tuple[Engine, Stubber]]:
    settings = {
        "kind": kind,
        "device": DEVICE,
        "shots": 100,
        "credential": "aws-test",
        "region": REGION,
        "s3_prefix": f"s3://{BUCKET}/jobs",
        "endpoint_url": moto.url,
        "role_arn": ROLE,
        "poll_interval": 3600,  # the tests poll by hand
        **extra,
    }
    async with engines.running(tmp_path, {"qpu": settings}, "qpu") as engine:
        engine.credentials.put("aws-test", "aws", {"access_key_id": "AKIAFAKE", "secret_access_key": "not-real-0123"})
        executor = engine.executors["qpu"]
        with Stubber(await asyncio.to_thread(executor._client, "braket")) as stubber:
            yield engine, stubber
            stubber.assert_no_pending_responses()


def described(status: str, **extra: Any) -> dict[str, Any]:
    """A GetJob answer, with the members the API model requires."""
    return {
        "status": status,
        "jobArn": JOB_ARN,
        "roleArn": ROLE,
        "jobName": "hetflow-job",
        "outputDataConfig": {"s3Path": f"s3://{BUCKET}/jobs/out"},
        "algorithmSpecification": {"scriptModeConfig": {"entryPoint": "braket_entry:main", "s3Uri": "s3://b/k"}},
        "instanceConfig": {"instanceType": "ml.m5.large", "volumeSizeInGb": 30},
        "createdAt": datetime(2026, 11, 25, tzinfo=timezone.utc),
        **extra,
    }


def expect_create(stubber: Stubber, instance: str = "ml.m5.large") -> None:
    request = {
        "clientToken": ANY,
        "jobName": ANY,
        "roleArn": ROLE,
        "algorithmSpecification": {
            "scriptModeConfig": {"entryPoint": "braket_entry:main", "s3Uri": ANY, "compressionType": "GZIP"}
        },
        "outputDataConfig": ANY,
        "instanceConfig": {"instanceType": instance, "volumeSizeInGb": 30, "instanceCount": 1},
        "deviceConfig": {"device": DEVICE},
        "hyperParameters": {"hetflow_manifest": ANY},
        "tags": ANY,
    }
    stubber.add_response("create_job", {"jobArn": JOB_ARN}, request)
    stubber.add_response("get_job", described("QUEUED"), {"jobArn": JOB_ARN})  # the first poll, at once


async def submitted(engine: Engine, stubber: Stubber, task: Task) -> dict[str, Any]:
    """The task's handle once its job was created and polled once (every queued answer consumed)."""
    deadline = time.monotonic() + 20
    while not ((engine.scheduler.lookup(task.id) or task).handle or {}).get("job_arn") or stubber._queue:
        assert time.monotonic() < deadline, f"the job was not created: {engine.scheduler.lookup(task.id)}"
        await asyncio.sleep(0.02)
    return (engine.scheduler.lookup(task.id) or task).handle or {}


async def poll(engine: Engine, stubber: Stubber, answer: dict[str, Any]) -> None:
    stubber.add_response("get_job", answer, {"jobArn": JOB_ARN})
    await engine.executors["qpu"].poll_once()


def play(moto: Moto, handle: dict[str, Any], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run the job as Braket would: the uploaded bundle unpacked as the working directory, the hyperparameters in
    the file AMZN_BRAKET_HP_FILE names, the job role's keys, `braket_entry:main` called. The one stand-in: the
    provider's device for the ARN is a LocalSimulator."""
    s3 = moto.client("s3")
    [bundle] = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"] if o["Key"].endswith(".tar.gz")]
    source = tmp_path / "job" / "source"
    source.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(s3.get_object(Bucket=BUCKET, Key=bundle)["Body"].read())) as tar:
        tar.extractall(source, filter="data")
    hyperparameters = tmp_path / "job" / "hyperparameters.json"
    hyperparameters.write_text(json.dumps({"hetflow_manifest": f"s3://{BUCKET}/jobs/{handle['s3']}/manifest.json"}))
    main = (
        "import braket_device\nfrom braket.devices import LocalSimulator\n"
        f"braket_device._devices[{DEVICE!r}] = LocalSimulator()  # the QPU's stand-in\n"
        "import braket_entry\nbraket_entry.main()\n"
    )
    environment = {"AMZN_BRAKET_HP_FILE": str(hyperparameters), "AMZN_BRAKET_DEVICE_ARN": DEVICE}
    return subprocess.run(
        [sys.executable, "-c", main],
        cwd=source,
        env=moto.container_env(environment),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("kind", ["braket", "hybrid"])
def test_a_device_arn_runs_the_cell_as_a_hybrid_job_and_its_counts_and_log_come_back(
    tmp_path: Path, moto: Moto, kind: str
) -> None:
    """The braket kind routes a device ARN to the hybrid kind's Hybrid Jobs; the hybrid kind runs every task so."""

    async def scenario() -> None:
        async with running(tmp_path, moto, kind) as (engine, stubber):
            expect_create(stubber)
            [task] = await submit(engine, BELL, ["counts"], "bell", options={"shots": "64"})
            handle = await submitted(engine, stubber, task)
            assert handle["job_arn"] == JOB_ARN and handle["job_name"].startswith("hetflow-")
            assert engine.scheduler.lookup(task.id).state is State.QUEUED

            await poll(engine, stubber, described("RUNNING"))
            assert engine.scheduler.lookup(task.id).state is State.RUNNING

            played = await asyncio.to_thread(play, moto, handle, tmp_path)
            assert played.returncode == 0, played.stderr
            logs = moto.client("logs")  # what the job printed, as Braket ships it to CloudWatch
            logs.create_log_group(logGroupName=LOG_GROUP)
            stream = f"{handle['job_name']}/algo-1-1764000000"
            logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=stream)
            events = [{"timestamp": int(time.time() * 1000), "message": line} for line in played.stdout.splitlines()]
            logs.put_log_events(logGroupName=LOG_GROUP, logStreamName=stream, logEvents=events)

            await poll(engine, stubber, described("COMPLETED"))
            [task] = await settle(engine, [task])
            assert task.state is State.COMPLETED, task.error
            counts = outputs((await engine.result(task.id))[1])["counts"]
            assert set(counts) <= {"00", "11"} and sum(counts.values()) == 64, counts  # the cell's shots
            assert "on StateVectorSimulator with 64 shots" in engine.logs(task.id).decode()
            live = moto.client("s3").list_objects_v2(Bucket=BUCKET, Prefix=f"jobs/{handle['s3']}/")
            assert "Contents" not in live, "the task's objects were left in S3"

    run(scenario)


def test_an_instance_type_option_reaches_create_job(tmp_path: Path, moto: Moto) -> None:
    async def scenario() -> None:
        async with running(tmp_path, moto) as (engine, stubber):
            expect_create(stubber, instance="ml.c5.xlarge")
            [task] = await submit(engine, BELL, ["counts"], "bell", options={"instance_type": "ml.c5.xlarge"})
            await submitted(engine, stubber, task)
            stubber.add_response("cancel_job", {"jobArn": JOB_ARN, "cancellationStatus": "CANCELLING"})
            await engine.cancel(task.id)

    run(scenario)


def test_cancelling_the_task_cancels_its_hybrid_job(tmp_path: Path, moto: Moto) -> None:
    async def scenario() -> None:
        async with running(tmp_path, moto) as (engine, stubber):
            expect_create(stubber)
            [task] = await submit(engine, BELL, ["counts"], "bell")
            await submitted(engine, stubber, task)
            answer = {"jobArn": JOB_ARN, "cancellationStatus": "CANCELLING"}
            stubber.add_response("cancel_job", answer, {"jobArn": JOB_ARN})
            await engine.cancel(task.id)
            [task] = await settle(engine, [task])
            assert task.state is State.CANCELLED
            assert engine.executors["qpu"].describe()["hybrid_jobs"] == 0

    run(scenario)


def test_a_hybrid_job_that_failed_without_an_outcome_reports_braket_s_reason(tmp_path: Path, moto: Moto) -> None:
    async def scenario() -> None:
        async with running(tmp_path, moto) as (engine, stubber):
            expect_create(stubber)
            [task] = await submit(engine, BELL, ["counts"], "bell")
            await submitted(engine, stubber, task)
            reason = "ClientError: the device is offline"
            await poll(engine, stubber, described("FAILED", failureReason=reason))
            [task] = await settle(engine, [task])
            assert task.state is State.FAILED and task.error
            assert task.error["type"] == "JobEnded" and reason in task.error["message"], task.error

    run(scenario)


def test_without_a_role_no_job_is_created_and_the_error_says_what_to_set(tmp_path: Path, moto: Moto) -> None:
    async def scenario() -> None:
        async with running(tmp_path, moto, role_arn="") as (engine, _):
            [task] = await submit(engine, BELL, ["counts"], "bell")
            [task] = await settle(engine, [task])
            assert task.state is State.FAILED and task.error
            assert "has no role_arn" in task.error["message"], task.error  # and the Stubber saw no call

    run(scenario)


def test_a_job_braket_no_longer_knows_fails_the_task_and_not_the_others(tmp_path: Path, moto: Moto) -> None:
    async def scenario() -> None:
        async with running(tmp_path, moto) as (engine, stubber):
            expect_create(stubber)
            [task] = await submit(engine, BELL, ["counts"], "bell")
            await submitted(engine, stubber, task)
            stubber.add_client_error("get_job", "ResourceNotFoundException", "no such job", 404, {"jobArn": JOB_ARN})
            await engine.executors["qpu"].poll_once()
            [task] = await settle(engine, [task])
            assert task.state is State.FAILED and task.error, task
            assert "Braket no longer knows the job" in task.error["message"], task.error

    run(scenario)
