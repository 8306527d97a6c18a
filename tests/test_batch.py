"""The batch executor under a real engine against moto (S3, Batch without Docker, CloudWatch Logs) on loopback.

moto's Batch marks a job SUCCEEDED the moment it is submitted and runs nothing, so each test plays the container:
it takes the command and environment the job was submitted with from `describe_jobs` and runs them as a process with
the job role's (fake) keys and AWS_ENDPOINT_URL pointing at moto, the array index set for an array child. That
process fetches the runner from S3 and reads and writes moto's S3 as a container would; the engine then collects
the real outcome. Until it does, the executor holds a SUCCEEDED job without a done object for `outcome_grace`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import pickle
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

import engines
from aws import ACCOUNT, REGION, Moto
from engines import outputs, payload, run, settle
from hetflow_server.engine import Engine
from hetflow_server.models import State, Task, TaskSpec
from hetflow_server.protocol import SpecError, sha256

pytestmark = pytest.mark.timeout(60)

BUCKET = "hetflow-tests"
PREFIX = "team/hetflow"
QUEUE, DEFINITION = "hetflow-queue", "hetflow-task"
SECRET = "engine-secret-not-real-0123456789"
LOG_GROUP = "/aws/batch/job"


@pytest.fixture
def moto(moto_url: str) -> Moto:
    """A clean moto with a versioned bucket, and Batch as an account would have it for hetflow: a job role, a
    compute environment, a queue and a job definition."""
    moto = Moto(moto_url)
    moto.reset()
    moto.versioned_bucket(BUCKET)
    role = moto.client("iam").create_role(RoleName="hetflow-job", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    batch = moto.client("batch")
    environment = batch.create_compute_environment(
        computeEnvironmentName="hetflow-ce", type="UNMANAGED", state="ENABLED", serviceRole=role
    )["computeEnvironmentArn"]
    batch.create_job_queue(
        jobQueueName=QUEUE,
        state="ENABLED",
        priority=1,
        computeEnvironmentOrder=[{"order": 1, "computeEnvironment": environment}],
    )
    batch.register_job_definition(
        jobDefinitionName=DEFINITION,
        type="container",
        containerProperties={
            "image": "hetflow-task:latest",
            "jobRoleArn": role,
            "resourceRequirements": [{"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "512"}],
        },
    )
    return moto


def batch_settings(moto: Moto, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "batch",
        "credential": "aws-test",
        "region": REGION,
        "s3_prefix": f"s3://{BUCKET}/{PREFIX}",
        "endpoint_url": moto.url,
        "job_queue": QUEUE,
        "job_definition": DEFINITION,
        "python": sys.executable,  # the "image's" Python: this venv has cloudpickle and boto3
        "poll_interval": 0.05,
        "outcome_grace": 20,
        **extra,
    }


@contextlib.asynccontextmanager
async def running(tmp_path: Path, moto: Moto, store_keys: bool = True, **extra: Any) -> AsyncIterator[Engine]:
    async with engines.running(tmp_path, {"batch": batch_settings(moto, **extra)}, "batch") as engine:
        if store_keys:
            keys = {"access_key_id": "AKIAENGINEFAKE", "secret_access_key": SECRET}
            engine.credentials.put("aws-test", "aws", keys)
        yield engine


async def submit(
    engine: Engine,
    code: str,
    outputs: list[str],
    inputs: dict[str, Any] | None = None,
    elements: list[Any] | None = None,
    data: bytes | None = None,
    **spec: Any,
) -> list[Task]:
    """A cell as %%remote captures it, with real input values (or a payload of the test's own)."""
    data = data or payload(code, outputs, inputs)
    hashes = {name: sha256(blob) for name, blob in pickle.loads(data)["inputs"].items()}
    task_spec = TaskSpec(code=code, inputs=hashes, outputs=outputs, name="cell", cache=False, **spec)
    element_blobs = [cloudpickle.dumps(e) for e in elements] if elements is not None else None
    tasks, _ = await engine.submit(task_spec, data, element_blobs)
    return tasks


async def handle(engine: Engine, task: Task) -> dict[str, Any]:
    """The task's job handle, once the executor has submitted it."""
    deadline = time.monotonic() + 10
    while not ((engine.scheduler.lookup(task.id) or task).handle or {}).get("job_id"):
        assert time.monotonic() < deadline, "the task was not submitted to Batch"
        await asyncio.sleep(0.02)
    return (engine.scheduler.lookup(task.id) or task).handle or {}


def described(moto: Moto, job_id: str) -> dict[str, Any]:
    [job] = moto.client("batch").describe_jobs(jobs=[job_id])["jobs"]
    return job


def command(job: dict[str, Any], index: int | None = None) -> tuple[list[str], dict[str, str]]:
    """What Batch would start: the job's command, and its environment (with the array index for a child)."""
    environment = {e["name"]: e["value"] for e in job["container"]["environment"]}
    if index is not None:
        environment["AWS_BATCH_JOB_ARRAY_INDEX"] = str(index)
    return job["container"]["command"], environment


async def play(moto: Moto, job_id: str, index: int | None = None) -> subprocess.CompletedProcess[str]:
    """Run the job's container command as its container would (off the event loop: the engine keeps polling)."""
    argv, environment = command(described(moto, job_id), index)
    return await asyncio.to_thread(
        subprocess.run, argv, env=moto.container_env(environment), capture_output=True, text=True, timeout=60
    )


def live_keys(moto: Moto) -> list[str]:
    return [o["Key"] for o in moto.client("s3").list_objects_v2(Bucket=BUCKET).get("Contents", [])]


def test_a_cell_runs_as_a_batch_job_and_its_computed_output_comes_back_through_encrypted_s3(
    tmp_path: Path, moto: Moto
) -> None:
    async def scenario() -> None:
        async with running(tmp_path, moto) as engine:
            [task] = await submit(engine, "y = x * 2\n", ["y"], {"x": 21}, executor="batch")
            job_id = (await handle(engine, task))["job_id"]
            job = described(moto, job_id)
            assert job["jobName"].startswith("hetflow-") and job["jobQueue"].endswith(f"job-queue/{QUEUE}")
            argv, environment = command(job)
            assert argv[:2] == [sys.executable, "-c"] and argv[3].startswith(f"s3://{BUCKET}/{PREFIX}/")
            assert environment["AWS_DEFAULT_REGION"] == REGION
            assert SECRET not in json.dumps(job) and "AKIAENGINEFAKE" not in json.dumps(job), "keys in the job"
            ran = await play(moto, job_id)
            assert ran.returncode == 0, ran.stderr
            [task] = await settle(engine, [task], 30)
            assert task.state is State.COMPLETED, task.error
            _, result = await engine.result(task.id)
            assert outputs(result) == {"y": 42}
        written = moto.written(BUCKET, PREFIX)
        runner = [key for key in written if key.split("/")[-1].startswith("runner-")]
        assert len(runner) == 1 and not written[runner[0]][0]["deleted"]
        blobs = [key for key in written if key.startswith(f"{PREFIX}/blobs/")]  # the payload: kept for the next
        assert len(blobs) == 1
        names = sorted(key.split("/")[-1] for key in written if key not in runner + blobs)
        assert names == sorted(["manifest.json", f"{task.id}.done", f"{task.id}.job", f"{task.id}.result"])
        versions = [v for versions in written.values() for v in versions]
        assert all(v["sse"] == "AES256" for v in versions), written  # the engine's writes and the container's
        assert all(v["deleted"] for key, vs in written.items() if key not in runner + blobs for v in vs), written
        assert sorted(live_keys(moto)) == sorted(runner + blobs)

    run(scenario)


def test_cell_options_become_the_jobs_queue_definition_and_resource_requirements(tmp_path: Path, moto: Moto) -> None:
    from moto.batch.models import batch_backends

    other = moto.client("batch").register_job_definition(
        jobDefinitionName="hetflow-gpu",
        type="container",
        containerProperties={"image": "hetflow-gpu:latest", "vcpus": 1, "memory": 512},
    )

    async def scenario() -> None:
        async with running(tmp_path, moto) as engine:
            options = {"vcpus": "2", "memory": "4096", "gpus": "1", "job_definition": "hetflow-gpu"}
            [task] = await submit(engine, "y = 1\n", ["y"], options=options)
            job_id = (await handle(engine, task))["job_id"]
            job = described(moto, job_id)
            assert job["jobDefinition"] == other["jobDefinitionArn"]
            submitted = batch_backends[ACCOUNT][REGION].get_job_by_id(job_id).container_overrides
            assert submitted["resourceRequirements"] == [
                {"type": "VCPU", "value": "2"},
                {"type": "MEMORY", "value": "4096"},
                {"type": "GPU", "value": "1"},
            ]
            await engine.cancel(task.id)
            with pytest.raises(SpecError, match=r"memory=lots: expected a whole number \(e\.g\. memory=4096\)"):
                await submit(engine, "y = 1\n", ["y"], options={"memory": "lots"})
            with pytest.raises(SpecError, match="unknown option 'partition' for a batch executor"):
                await submit(engine, "y = 1\n", ["y"], options={"partition": "debug"})

    run(scenario)


def test_a_foreach_of_3_goes_out_as_one_array_job_whose_children_compute_their_own_elements(
    tmp_path: Path, moto: Moto
) -> None:
    async def scenario() -> None:
        async with running(tmp_path, moto, sse="aws:kms", kms_key_id="alias/hetflow") as engine:
            tasks = await submit(engine, "y = x * 2\n", ["y"], elements=[1, 2, 3], foreach="x")
            handles = [await handle(engine, task) for task in tasks]
            parent = handles[0]["job_id"].split(":")[0]
            assert [h["job_id"] for h in handles] == [f"{parent}:{n}" for n in range(3)]
            submitted = moto.client("batch").list_jobs(jobQueue=QUEUE)["jobSummaryList"]
            assert [j["jobId"] for j in submitted if ":" not in j["jobId"]] == [parent], "not one submit_job"
            assert described(moto, parent)["arrayProperties"]["size"] == 3
            for index in (2, 0, 1):  # children start in any order; each runs the element of its index
                ran = await play(moto, f"{parent}:{index}", index)
                assert ran.returncode == 0, ran.stderr
            tasks = await settle(engine, tasks, 30)
            assert all(t.state is State.COMPLETED for t in tasks), [t.error for t in tasks]
            results = await engine.group_results(tasks[0].id)
            assert [outputs(result)["y"] for _, result in results] == [2, 4, 6]
        written = moto.written(BUCKET, PREFIX)
        payloads = [key for key in written if "/blobs/" in key]
        assert len(payloads) == 1 and len(written[payloads[0]]) == 1, "the shared payload went up more than once"
        versions = [v for vs in written.values() for v in vs]
        assert all((v["sse"], v["kms"]) == ("aws:kms", "alias/hetflow") for v in versions), written

    run(scenario)


def test_what_the_container_prints_reaches_the_task_log_while_the_job_runs(tmp_path: Path, moto: Moto) -> None:
    flag = tmp_path / "go-on"
    code = (
        "import os, time\nprint('hello from batch', flush=True)\n"
        f"while not os.path.exists({str(flag)!r}):\n    time.sleep(0.02)\ny = x * 2\n"
    )
    logs = moto.client("logs")

    def container(job_id: str) -> int:
        """The container, with its stdout shipped line by line to CloudWatch Logs as the awslogs driver does."""
        job = described(moto, job_id)
        stream = job["container"]["logStreamName"]
        logs.create_log_group(logGroupName=LOG_GROUP)
        logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=stream)
        argv, environment = command(job)
        process = subprocess.Popen(
            argv, env=moto.container_env(environment), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert process.stdout is not None
        for line in process.stdout:
            event = {"timestamp": int(time.time() * 1000), "message": line.rstrip("\n")}
            logs.put_log_events(logGroupName=LOG_GROUP, logStreamName=stream, logEvents=[event])
        return process.wait(timeout=30)

    async def scenario() -> None:
        async with running(tmp_path, moto) as engine:
            [task] = await submit(engine, code, ["y"], {"x": 5})
            playing = asyncio.ensure_future(asyncio.to_thread(container, (await handle(engine, task))["job_id"]))
            deadline = time.monotonic() + 15
            while b"hello from batch" not in engine.logs(task.id):
                assert time.monotonic() < deadline and not playing.done(), "the log line did not reach the task"
                await asyncio.sleep(0.05)
            assert engine.scheduler.lookup(task.id).state is State.RUNNING  # the task still waits for the flag
            threading.Thread(target=flag.touch).start()
            assert await playing == 0
            [task] = await settle(engine, [task], 30)
            assert task.state is State.COMPLETED, task.error
            assert engine.logs(task.id).decode() == "hello from batch\n"
            assert outputs((await engine.result(task.id))[1]) == {"y": 10}

    run(scenario)


def test_a_cell_that_raises_fails_with_the_traceback_from_the_container(tmp_path: Path, moto: Moto) -> None:
    code = "def check(v):\n    raise ValueError(f'bad value {v}')\n\ncheck(x)\n"

    async def scenario() -> None:
        async with running(tmp_path, moto) as engine:
            [task] = await submit(engine, code, [], {"x": 3})
            ran = await play(moto, (await handle(engine, task))["job_id"])
            assert ran.returncode == 1, "a failed task must fail its container (Batch marks the job FAILED)"
            [task] = await settle(engine, [task], 30)
            assert task.state is State.FAILED
            assert (task.error["type"], task.error["message"]) == ("ValueError", "bad value 3")
            assert 'File "Cell In[1]", line 3, in check' in task.error["traceback"], task.error["traceback"]
            assert "raise ValueError(f'bad value {v}')" in task.error["traceback"]

    run(scenario)


def test_a_payload_pickled_with_another_cloudpickle_major_is_refused_in_the_container(
    tmp_path: Path, moto: Moto
) -> None:
    spec = pickle.loads(payload("y = 1\n", ["y"]))
    other = f"{int(cloudpickle.__version__.split('.')[0]) + 1}.0.0"
    data = pickle.dumps({**spec, "cloudpickle": other}, protocol=5)

    async def scenario() -> None:
        async with running(tmp_path, moto) as engine:
            [task] = await submit(engine, "y = 1\n", ["y"], data=data)
            ran = await play(moto, (await handle(engine, task))["job_id"])
            assert ran.returncode == 1
            [task] = await settle(engine, [task], 30)
            assert task.state is State.FAILED and task.error["type"] == "EnvironmentError"
            assert f"the task was pickled with cloudpickle {other}, but" in task.error["message"]
            assert f"has cloudpickle {cloudpickle.__version__}: the major versions must match" in task.error["message"]

    run(scenario)


def test_a_dependent_cell_gets_its_upstream_output_inlined_into_its_job(tmp_path: Path, moto: Moto) -> None:
    async def scenario() -> None:
        async with running(tmp_path, moto) as engine:
            [a] = await submit(engine, "a = list(range(10))\n", ["a"])
            [b] = await submit(engine, "b = sum(a)\n", ["b"], refs={"a": [a.id, "a"]})
            assert (await play(moto, (await handle(engine, a))["job_id"])).returncode == 0
            ran = await play(moto, (await handle(engine, b))["job_id"])  # b is submitted once a completed
            assert ran.returncode == 0, ran.stderr
            a, b = await settle(engine, [a, b], 30)
            assert b.state is State.COMPLETED, b.error
            assert outputs((await engine.result(b.id))[1]) == {"b": 45}

    run(scenario)


def test_a_job_that_fails_without_an_outcome_reports_the_reason_batch_gives(
    tmp_path: Path, moto: Moto, monkeypatch: pytest.MonkeyPatch
) -> None:
    # moto's Batch (in this process) holds submit_job for this many seconds, then marks the job FAILED; meanwhile
    # the test terminates it as the service would when its instance goes away, which gives the job its reason
    monkeypatch.setenv("MOTO_SIMPLE_BATCH_FAIL_AFTER", "2")
    reason = "Host EC2 (instance i-0123456789abcdef0) terminated."
    batch = moto.client("batch")

    def terminate_when_submitted() -> None:
        deadline = time.monotonic() + 10
        while not (found := batch.list_jobs(jobQueue=QUEUE)["jobSummaryList"]):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        batch.terminate_job(jobId=found[0]["jobId"], reason=reason)

    async def scenario() -> None:
        async with running(tmp_path, moto) as engine:
            [task] = await submit(engine, "y = 1\n", ["y"])
            await asyncio.to_thread(terminate_when_submitted)
            [task] = await settle(engine, [task], 30)
            assert task.state is State.FAILED and task.error["type"] == "JobEnded"
            job_id = task.handle["job_id"]
            assert described(moto, job_id)["status"] == "FAILED"
            assert (
                task.error["message"]
                == f"AWS Batch job {job_id} ended FAILED ({reason}) before the task wrote its outcome"
            )

    run(scenario)


def test_a_job_that_succeeded_without_an_outcome_fails_once_the_grace_is_over(tmp_path: Path, moto: Moto) -> None:
    async def scenario() -> None:
        async with running(tmp_path, moto, outcome_grace=0.3) as engine:
            [task] = await submit(engine, "y = 1\n", ["y"])
            [task] = await settle(engine, [task], 30)
            assert task.state is State.FAILED and task.error["type"] == "JobEnded"
            assert "ended SUCCEEDED (no reason given) before the task wrote its outcome" in task.error["message"]
            assert "(none within outcome_grace=0.3 s)" in task.error["message"]

    run(scenario)


def test_cancelling_a_task_terminates_its_batch_job_and_deletes_its_objects(tmp_path: Path, moto: Moto) -> None:
    async def scenario() -> None:
        async with running(tmp_path, moto) as engine:
            [task] = await submit(engine, "y = 1\n", ["y"])
            job_id = (await handle(engine, task))["job_id"]
            task = await engine.cancel(task.id)
            assert task.state is State.CANCELLED
            assert described(moto, job_id)["statusReason"] == "cancelled in hetflow"
            left = [key for key in live_keys(moto) if not key.startswith(f"{PREFIX}/blobs/")]  # blobs stay shared
            assert [key.split("/")[-1][:7] for key in left] == ["runner-"]

    run(scenario)


def test_a_restarted_engine_follows_its_batch_job_to_the_result(tmp_path: Path, moto: Moto) -> None:
    async def scenario() -> None:
        async with running(tmp_path, moto) as engine:
            [task] = await submit(engine, "y = x * 2\n", ["y"], {"x": 8})
            job_id = (await handle(engine, task))["job_id"]
        assert (await play(moto, job_id)).returncode == 0  # the job ran while no engine was there
        async with running(tmp_path, moto, store_keys=False) as engine:  # the store kept the credential
            [task] = await settle(engine, [task], 30)
            assert task.state is State.COMPLETED, task.error
            assert task.handle["job_id"] == job_id
            assert outputs((await engine.result(task.id))[1]) == {"y": 16}

    run(scenario)


def test_without_profile_or_credential_the_servers_aws_environment_is_not_used(
    tmp_path: Path, moto: Moto, monkeypatch: pytest.MonkeyPatch
) -> None:
    # keys that moto would accept, and moto as the endpoint: had the executor used them, the job would go out
    for name, value in {
        "AWS_ACCESS_KEY_ID": "AKIAFROMTHEENVIRONMENT",
        "AWS_SECRET_ACCESS_KEY": "environment-secret",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ENDPOINT_URL": moto.url,
    }.items():
        monkeypatch.setenv(name, value)

    async def scenario() -> None:
        async with running(tmp_path, moto, store_keys=False, credential="") as engine:
            executor = engine.executors["batch"]
            expected = "has no AWS credentials: set `profile` (a named AWS profile) or `credential`"
            assert not executor.describe()["healthy"] and expected in executor.describe()["error"]
            checked = await executor.check()
            assert not checked["healthy"] and expected in checked["error"]
            [task] = await submit(engine, "y = 1\n", ["y"])
            [task] = await settle(engine, [task], 30)
            assert task.state is State.FAILED and task.error["type"] == "AccessError"
            assert expected in task.error["message"] and "never used" in task.error["message"]
        assert moto.client("batch").list_jobs(jobQueue=QUEUE)["jobSummaryList"] == []
        assert live_keys(moto) == []

    run(scenario)


def test_a_profile_without_keys_of_its_own_does_not_fall_back_to_the_environments(
    tmp_path: Path, moto: Moto, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "aws-config"
    config.write_text(f"[profile empty]\nregion = {REGION}\n")
    for name, value in {
        "AWS_CONFIG_FILE": str(config),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",  # no instance metadata service to wait for here
        "AWS_ACCESS_KEY_ID": "AKIAFROMTHEENVIRONMENT",
        "AWS_SECRET_ACCESS_KEY": "environment-secret",
    }.items():
        monkeypatch.setenv(name, value)

    async def scenario() -> None:
        async with running(tmp_path, moto, store_keys=False, credential="", profile="empty") as engine:
            [task] = await submit(engine, "y = 1\n", ["y"])
            [task] = await settle(engine, [task], 30)
            assert task.state is State.FAILED and task.error and task.error["type"] == "AccessError", task.error
            assert "profile 'empty' has no credentials of its own" in task.error["message"], task.error
        assert moto.client("batch").list_jobs(jobQueue=QUEUE)["jobSummaryList"] == []

    run(scenario)


def test_describe_and_check_name_the_credential_but_never_show_its_secret(tmp_path: Path, moto: Moto) -> None:
    async def scenario() -> None:
        async with running(tmp_path, moto) as engine:
            executor = engine.executors["batch"]
            checked = await executor.check()
            assert checked["healthy"], checked
            shown = json.dumps([executor.describe(), checked, engine.describe_executors()])
            assert "credential aws-test" in shown and SECRET not in shown
            assert checked["job_queue"] == QUEUE and checked["s3_prefix"] == f"s3://{BUCKET}/{PREFIX}"

    run(scenario)


def test_a_large_input_read_by_a_foreach_and_a_later_cell_is_put_to_s3_once(tmp_path: Path, moto: Moto) -> None:
    """Counted in what S3 holds: every version written under the prefix, with its size."""
    big = bytes(range(256)) * 4096  # 1 MiB

    async def scenario() -> None:
        async with running(tmp_path, moto) as engine:
            fan = await submit(engine, "n = len(big) + k\n", ["n"], {"big": big}, elements=[1, 2, 3], foreach="k")
            parent = (await handle(engine, fan[0]))["job_id"].split(":")[0]
            for index in range(3):
                assert (await play(moto, f"{parent}:{index}", index)).returncode == 0
            [later] = await submit(engine, "m = len(big)\n", ["m"], {"big": big})
            assert (await play(moto, (await handle(engine, later))["job_id"])).returncode == 0
            done = await settle(engine, [*fan, later], 30)
            assert all(t.state is State.COMPLETED for t in done), [t.error for t in done]
            assert [outputs((await engine.result(t.id))[1]) for t in done] == [
                {"n": len(big) + 1},
                {"n": len(big) + 2},
                {"n": len(big) + 3},
                {"m": len(big)},
            ]
        s3 = moto.client("s3")
        sizes = [v["Size"] for v in s3.list_object_versions(Bucket=BUCKET, Prefix=PREFIX).get("Versions", [])]
        assert sum(sizes) < 1.5 * len(big), f"{sum(sizes) / len(big):.2f}x the input was put to S3"

    run(scenario)
