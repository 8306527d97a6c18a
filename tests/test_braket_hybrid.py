"""The braket executor on a device ARN: tasks in a warm Amazon Braket Hybrid Job.

Braket cannot be reached from here and moto has no Braket: the engine's braket client is wrapped in botocore's
`Stubber`, which checks every request against the real API model and answers in turn (CreateJob, GetJob through
QUEUED -> RUNNING -> COMPLETED, CancelJob): a CreateJob the test did not expect fails the test. Everything else is
real: the job's objects go to moto's S3 (on loopback), its log to moto's CloudWatch Logs, and the job's container
is played by the bundle the engine uploaded — its entry point and runner, run as a process the way the job's
container runs them, its output shipped line by line to the job's log stream, with a LocalSimulator standing in
for the QPU (an AwsDevice needs the real service). The poll loop is driven by hand (`poll_once`), one stubbed
GetJob each.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import subprocess
import sys
import tarfile
import threading
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
NEXT_ARN = "arn:aws:braket:us-east-1:123456789012:job/hetflow-def"
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
        "keep_alive": 0,  # a job ends once its queue is empty (the loop's tests say otherwise)
        **extra,
    }
    async with engines.running(tmp_path, {"qpu": settings}, "qpu") as engine:
        engine.credentials.put("aws-test", "aws", {"access_key_id": "AKIAFAKE", "secret_access_key": "not-real-0123"})
        executor = engine.executors["qpu"]
        with Stubber(await asyncio.to_thread(executor._client, "braket")) as stubber:
            yield engine, stubber
            stubber.assert_no_pending_responses()


def described(status: str, arn: str = JOB_ARN, **extra: Any) -> dict[str, Any]:
    """A GetJob answer, with the members the API model requires."""
    return {
        "status": status,
        "jobArn": arn,
        "roleArn": ROLE,
        "jobName": "hetflow-job",
        "outputDataConfig": {"s3Path": f"s3://{BUCKET}/jobs/out"},
        "algorithmSpecification": {"scriptModeConfig": {"entryPoint": "braket_entry:main", "s3Uri": "s3://b/k"}},
        "instanceConfig": {"instanceType": "ml.m5.large", "volumeSizeInGb": 30},
        "createdAt": datetime(2026, 11, 25, tzinfo=timezone.utc),
        **extra,
    }


def expect_create(stubber: Stubber, instance: str = "ml.m5.large", arn: str = JOB_ARN) -> None:
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
        "hyperParameters": {"hetflow_queue": ANY},
        "tags": ANY,
    }
    stubber.add_response("create_job", {"jobArn": arn}, request)


def expect_first_poll(stubber: Stubber, arn: str = JOB_ARN) -> None:
    """The poll a submission starts at once, when nothing was followed before."""
    stubber.add_response("get_job", described("QUEUED", arn), {"jobArn": arn})


async def submitted(engine: Engine, stubber: Stubber, task: Task) -> dict[str, Any]:
    """The task's handle once its job was created and polled once (every queued answer consumed)."""
    deadline = time.monotonic() + 20
    while not ((engine.scheduler.lookup(task.id) or task).handle or {}).get("job_arn") or stubber._queue:
        assert time.monotonic() < deadline, f"the job was not created: {engine.scheduler.lookup(task.id)}"
        await asyncio.sleep(0.02)
    return (engine.scheduler.lookup(task.id) or task).handle or {}


async def poll(engine: Engine, stubber: Stubber, answer: dict[str, Any]) -> None:
    stubber.add_response("get_job", answer, {"jobArn": answer["jobArn"]})
    await engine.executors["qpu"].poll_once()


async def until(engine: Engine, stubber: Stubber, task: Task, *states: State, arn: str = JOB_ARN) -> Task:
    """Poll (the job RUNNING) until the task is in one of these states."""
    deadline = time.monotonic() + 30
    while (task := engine.scheduler.lookup(task.id) or task).state not in states:
        assert time.monotonic() < deadline, f"the task stayed {task.state}: {task.error}"
        if engine.executors["qpu"].jobs:  # else the outcome is on its way to the scheduler: no GetJob is made
            await poll(engine, stubber, described("RUNNING", arn))
        await asyncio.sleep(0.01)
    return task


class Container:
    """A warm job's container, played as Braket runs it: the uploaded bundle unpacked as the working directory, the
    hyperparameters in the file AMZN_BRAKET_HP_FILE names, the job role's keys, `braket_entry:main` called, and
    what it prints shipped line by line to the job's CloudWatch stream. The one stand-in: the provider's device
    for the ARN is a LocalSimulator."""

    def __init__(self, moto: Moto, handle: dict[str, Any], where: Path):
        s3 = moto.client("s3")
        [bundle] = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"] if o["Key"].endswith(".tar.gz")]
        source = where / handle["s3"] / "source"
        source.mkdir(parents=True)
        with tarfile.open(fileobj=io.BytesIO(s3.get_object(Bucket=BUCKET, Key=bundle)["Body"].read())) as tar:
            tar.extractall(source, filter="data")
        hyperparameters = source.parent / "hyperparameters.json"
        manifest = f"s3://{BUCKET}/jobs/{handle['s3']}/manifest.json"
        hyperparameters.write_text(json.dumps({"hetflow_queue": manifest}))
        main = (
            "import braket_device\nfrom braket.devices import LocalSimulator\n"
            f"braket_device._devices[{DEVICE!r}] = LocalSimulator()  # the QPU's stand-in\n"
            "import braket_entry\nbraket_entry.main()\n"
        )
        environment = {"AMZN_BRAKET_HP_FILE": str(hyperparameters), "AMZN_BRAKET_DEVICE_ARN": DEVICE}
        self.process = subprocess.Popen(
            [sys.executable, "-u", "-c", main],
            cwd=source,
            env=moto.container_env(environment),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.output: list[str] = []
        self.logs, self.stream = moto.client("logs"), f"{handle['job_name']}/algo-1-1764000000"
        with contextlib.suppress(self.logs.exceptions.ResourceAlreadyExistsException):
            self.logs.create_log_group(logGroupName=LOG_GROUP)
        self.logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=self.stream)
        self.shipper = threading.Thread(target=self._ship, daemon=True)
        self.shipper.start()

    def _ship(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)
            event = {"timestamp": int(time.time() * 1000), "message": line.rstrip("\n")}
            self.logs.put_log_events(logGroupName=LOG_GROUP, logStreamName=self.stream, logEvents=[event])

    def wait(self, timeout: float = 60) -> int:
        status = self.process.wait(timeout)
        self.shipper.join(10)
        return status

    def kill(self) -> None:
        self.process.kill()
        self.wait()


async def container(moto: Moto, handle: dict[str, Any], where: Path) -> Container:
    return await asyncio.to_thread(Container, moto, handle, where)


@pytest.mark.parametrize("kind", ["braket", "hybrid"])
def test_a_device_arn_runs_the_cell_in_a_hybrid_job_and_its_counts_and_log_come_back(
    tmp_path: Path, moto: Moto, kind: str
) -> None:
    """The braket kind routes a device ARN to the hybrid kind's Hybrid Jobs; the hybrid kind runs every task so."""

    async def scenario() -> None:
        async with running(tmp_path, moto, kind) as (engine, stubber):
            expect_create(stubber)
            expect_first_poll(stubber)
            [task] = await submit(engine, BELL, ["counts"], "bell", options={"shots": "64"})
            handle = await submitted(engine, stubber, task)
            assert handle["job_arn"] == JOB_ARN and handle["job_name"].startswith("hetflow-")
            await poll(engine, stubber, described("RUNNING"))  # the job runs, the task is not taken yet
            assert engine.scheduler.lookup(task.id).state is State.QUEUED

            played = await container(moto, handle, tmp_path)
            assert await asyncio.to_thread(played.wait) == 0, "".join(played.output)
            await poll(engine, stubber, described("COMPLETED"))
            [task] = await settle(engine, [task])
            assert task.state is State.COMPLETED, task.error
            counts = outputs((await engine.result(task.id))[1])["counts"]
            assert set(counts) <= {"00", "11"} and sum(counts.values()) == 64, counts  # the cell's shots
            log = engine.logs(task.id).decode()
            assert log == "on StateVectorSimulator with 64 shots\n", log  # its own lines, not the job's marks
            live = moto.client("s3").list_objects_v2(Bucket=BUCKET, Prefix=f"jobs/{handle['s3']}/")
            assert "Contents" not in live, f"objects were left in S3: {[o['Key'] for o in live['Contents']]}"

    run(scenario)


STEP = """\
from braket.circuits import Circuit
print(f"iteration {i}")
ones = device.run(Circuit().x(0), shots=2).result().measurement_counts["1"] + i
"""


@pytest.mark.timeout(240)
def test_two_hundred_iterations_of_a_loop_run_in_one_hybrid_job_that_idles_out_after_keep_alive(
    tmp_path: Path, moto: Moto
) -> None:
    """One CreateJob for 200 iterations (the Stubber refuses a second one), each iteration's value and log its
    own; once idle for keep_alive the job closes its queue and ends, and the next task starts a new job."""

    async def scenario() -> None:
        async with running(tmp_path, moto, keep_alive=4) as (engine, stubber):
            expect_create(stubber)
            expect_first_poll(stubber)
            played = None
            for i in range(200):
                [task] = await submit(engine, STEP, ["ones"], f"step {i}", values={"i": i})
                if played is None:
                    played = await container(moto, await submitted(engine, stubber, task), tmp_path)
                task = await until(engine, stubber, task, State.COMPLETED, State.FAILED)
                assert task.state is State.COMPLETED, task.error
                assert outputs((await engine.result(task.id))[1])["ones"] == 2 + i
                assert engine.logs(task.id).decode() == f"iteration {i}\n"
            assert played is not None and played.process.poll() is None, "the warm job ended within the loop"
            assert await asyncio.to_thread(played.wait, 30) == 0, "".join(played.output[-20:])
            ran = [line for line in played.output if line.startswith("::hetflow-task ")]
            assert len(ran) == 200, f"the job ran {len(ran)} tasks"

            closed = moto.client("s3").list_objects_v2(Bucket=BUCKET, Prefix="jobs/warm-")["Contents"]
            assert any(o["Key"].endswith("/closed") for o in closed), "the worker did not close its queue"
            expect_create(stubber, arn=NEXT_ARN)  # the task finds the queue closed and takes itself back
            [task] = await submit(engine, STEP, ["ones"], "after the loop", values={"i": 0})
            handle = await submitted(engine, stubber, task)
            assert handle["job_arn"] == NEXT_ARN, handle
            stubber.add_response("cancel_job", {"jobArn": NEXT_ARN, "cancellationStatus": "CANCELLING"})
            await engine.cancel(task.id)

    run(scenario)


KILLABLE = """\
import pathlib, time
with open(marker, "a") as fh:
    fh.write(name + "\\n")
if name == "in flight":
    time.sleep(60)
"""


def test_killing_the_job_s_container_mid_loop_fails_only_the_iteration_in_flight(tmp_path: Path, moto: Moto) -> None:
    """The task the killed container was running fails with Braket's reason; the one queued behind it runs once,
    in a new job; neither runs twice (their own marker file says so)."""
    marker = str(tmp_path / "ran.txt")

    async def scenario() -> None:
        async with running(tmp_path, moto, keep_alive=30) as (engine, stubber):
            expect_create(stubber)
            expect_first_poll(stubber)
            [flight] = await submit(engine, KILLABLE, [], "in flight", values={"marker": marker, "name": "in flight"})
            [behind] = await submit(engine, KILLABLE, [], "behind", values={"marker": marker, "name": "behind"})
            played = await container(moto, await submitted(engine, stubber, flight), tmp_path / "first")
            await until(engine, stubber, flight, State.RUNNING)
            await asyncio.to_thread(played.kill)

            killed = described("FAILED", failureReason="AlgorithmError: the container was killed")
            stubber.add_response("get_job", killed, {"jobArn": JOB_ARN})
            expect_create(stubber, arn=NEXT_ARN)  # the task queued behind goes to a new job
            await engine.executors["qpu"].poll_once()
            [flight] = await settle(engine, [flight])
            assert flight.state is State.FAILED and flight.error, flight
            assert "while the task ran: AlgorithmError: the container was killed" in flight.error["message"]
            handle = (engine.scheduler.lookup(behind.id) or behind).handle or {}
            assert handle["job_arn"] == NEXT_ARN, handle

            second = await container(moto, handle, tmp_path / "second")
            behind = await until(engine, stubber, behind, State.COMPLETED, State.FAILED, arn=NEXT_ARN)
            assert behind.state is State.COMPLETED, behind.error
            assert Path(marker).read_text().splitlines() == ["in flight", "behind"]
            await asyncio.to_thread(second.kill)

    run(scenario)


def test_an_instance_type_option_reaches_create_job(tmp_path: Path, moto: Moto) -> None:
    async def scenario() -> None:
        async with running(tmp_path, moto) as (engine, stubber):
            expect_create(stubber, instance="ml.c5.xlarge")
            expect_first_poll(stubber)
            [task] = await submit(engine, BELL, ["counts"], "bell", options={"instance_type": "ml.c5.xlarge"})
            await submitted(engine, stubber, task)
            stubber.add_response("cancel_job", {"jobArn": JOB_ARN, "cancellationStatus": "CANCELLING"})
            await engine.cancel(task.id)

    run(scenario)


def test_cancelling_the_task_cancels_its_hybrid_job(tmp_path: Path, moto: Moto) -> None:
    async def scenario() -> None:
        async with running(tmp_path, moto) as (engine, stubber):
            expect_create(stubber)
            expect_first_poll(stubber)
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
            expect_first_poll(stubber)
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
            expect_first_poll(stubber)
            [task] = await submit(engine, BELL, ["counts"], "bell")
            await submitted(engine, stubber, task)
            stubber.add_client_error("get_job", "ResourceNotFoundException", "no such job", 404, {"jobArn": JOB_ARN})
            await engine.executors["qpu"].poll_once()
            [task] = await settle(engine, [task])
            assert task.state is State.FAILED and task.error, task
            assert "Braket no longer knows the job" in task.error["message"], task.error

    run(scenario)
