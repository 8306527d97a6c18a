"""The kubernetes executor under a real engine against the API server double of tests/kubeapi.py (no real Kubernetes
can run here): the client's real requests, every manifest checked against Kubernetes' OpenAPI schema, each pod's
command really run as a local process with its Secret as files, its output as the pod's log."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
from kubeapi import KubeAPI, kube_api

import engines
from aws import REGION, ROLE_KEYS, Moto
from engines import outputs, run, settle, submit, until_running
from hetflow_server.engine import Engine
from hetflow_server.models import State
from servers import JupyterServer

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[KubeAPI, Path]]:
    with kube_api(tmp_path) as found:
        yield found


def settings(config: Path, **extra: Any) -> dict[str, Any]:
    # the image's Python: the double runs the pod's command here, so this venv's
    return {
        "kind": "kubernetes",
        "kubeconfig": str(config),
        "image": "python:3.11-slim",
        "python": sys.executable,
        "namespace": "research",
        "poll_interval": 0.05,
        **extra,
    }


@contextlib.asynccontextmanager
async def running(tmp_path: Path, config: Path, **extra: Any) -> AsyncIterator[Engine]:
    async with engines.running(tmp_path, {"k8s": settings(config, **extra)}, "k8s") as engine:
        yield engine


def jobs_sent(api: KubeAPI) -> list[dict[str, Any]]:
    return [m for m in api.received if m["kind"] == "Job"]


def test_a_cell_runs_as_a_job_returns_its_value_streams_its_log_and_leaves_nothing(
    tmp_path: Path, cluster: tuple[KubeAPI, Path]
) -> None:
    api, config = cluster

    async def scenario() -> None:
        async with running(tmp_path, config) as engine:
            code = "import time\nfor i in range(3):\n    print('tick', i, flush=True)\n    time.sleep(0.3)\ny = 6 * 7\n"
            [task] = await submit(engine, code, ["y"], "answer")
            await until_running(engine, task)
            await asyncio.sleep(0.5)
            assert "tick 0" in engine.logs(task.id).decode(), "the log did not stream while the pod ran"
            [task] = await settle(engine, [task], 30)
            assert task.state is State.COMPLETED, task.error
            assert outputs((await engine.result(task.id))[1]) == {"y": 42}
            assert engine.logs(task.id).decode() == "tick 0\ntick 1\ntick 2\n"
            shown = engine.describe_executors()["k8s"]
            assert (shown["namespace"], shown["context"]) == ("research", "(current)"), shown
            deadline = time.monotonic() + 10  # the Job goes with the cleanup that follows the outcome
            while api.jobs and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        assert api.refused == [], api.refused  # every manifest passed the schema
        (job,) = jobs_sent(api)
        assert job["spec"]["backoffLimit"] == 0 and job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
        assert api.jobs == {} and api.secrets == {}, "the Job or its Secret stayed behind"

    run(scenario)


def test_a_failing_cell_shows_the_remote_traceback_with_the_cells_line(
    tmp_path: Path, cluster: tuple[KubeAPI, Path]
) -> None:
    async def scenario() -> None:
        async with running(tmp_path, cluster[1]) as engine:
            [task] = await submit(engine, "x = 1\nraise ValueError('boom')\n", ["x"], "broken")
            [task] = await settle(engine, [task], 30)
            assert task.state is State.FAILED and task.error["type"] == "ValueError", task.error
            assert "line 3" in task.error["traceback"] and "raise ValueError('boom')" in task.error["traceback"]

    run(scenario)


def test_a_foreach_of_32_is_one_indexed_job_whose_pods_compute_their_own_elements(
    tmp_path: Path, cluster: tuple[KubeAPI, Path]
) -> None:
    api, config = cluster

    async def scenario() -> None:
        async with running(tmp_path, config, cpu="100m", memory="256Mi") as engine:
            elements = [cloudpickle.dumps(n) for n in range(32)]
            tasks = await submit(engine, "y = n * n\n", ["y"], "squares", elements, foreach="n")
            tasks = await settle(engine, tasks, 60)
            assert all(t.state is State.COMPLETED for t in tasks), [t.error for t in tasks if t.error]
            results = await engine.group_results(tasks[0].id)
            assert [outputs(result or b"")["y"] for _, result in results] == [n * n for n in range(32)]
        (job,) = jobs_sent(api)
        assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["completions"] == 32
        limits = job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert limits == {"cpu": "100m", "memory": "256Mi"} and api.refused == []

    run(scenario)


def test_cancel_deletes_the_job_and_stops_its_code(tmp_path: Path, cluster: tuple[KubeAPI, Path]) -> None:
    api, config = cluster
    beat = tmp_path / "beat"

    async def scenario() -> None:
        async with running(tmp_path, config) as engine:
            code = f"import time\nwhile True:\n    open({str(beat)!r}, 'a').write('.')\n    time.sleep(0.05)\n"
            [task] = await submit(engine, code, [], "forever")
            await until_running(engine, task)
            while not beat.exists():
                await asyncio.sleep(0.05)
            task = await engine.cancel(task.id)
            assert task.state is State.CANCELLED
            assert api.jobs == {} and api.secrets == {}, "the Job was not deleted"
            size = beat.stat().st_size
            await asyncio.sleep(0.5)
            assert beat.stat().st_size == size, "the cancelled task's code ran on"

    run(scenario)


def test_a_timeout_is_the_jobs_deadline_and_retries_run_again(tmp_path: Path, cluster: tuple[KubeAPI, Path]) -> None:
    api, config = cluster

    async def scenario() -> None:
        async with running(tmp_path, config) as engine:
            [task] = await submit(engine, "import time\ntime.sleep(30)\n", [], "slow", timeout=1, retries=1)
            [task] = await settle(engine, [task], 30)
            assert task.state is State.FAILED and task.attempts == 2, (task.state, task.attempts)
            assert "DeadlineExceeded" in task.error["message"] or "timeout=1" in task.error["message"], task.error
        assert [job["spec"]["activeDeadlineSeconds"] for job in jobs_sent(api)] == [1, 1]

    run(scenario)


@pytest.mark.parametrize(
    ("extra", "code", "said"),
    [
        (
            {"memory": "64Mi"},
            "hog = bytearray(512 << 20)\nfor i in range(0, len(hog), 4096):\n    hog[i] = 1\n",
            "OOMKilled",
        ),
        ({"image": "registry.example/research:missing"}, "x = 1\n", "ImagePullBackOff"),
    ],
    ids=["oom-killed", "image-pull"],
)
def test_a_pod_that_cannot_finish_fails_its_task_with_kubernetes_reason_in_one_line(
    tmp_path: Path, cluster: tuple[KubeAPI, Path], extra: dict[str, str], code: str, said: str
) -> None:
    async def scenario() -> None:
        async with running(tmp_path, cluster[1], **extra) as engine:
            [task] = await submit(engine, code, [], "doomed")
            [task] = await settle(engine, [task], 30)
            assert task.state is State.FAILED and said in task.error["message"], task.error
            assert "\n" not in task.error["message"].split(";")[0]

    run(scenario)


def test_a_restarted_engine_finds_its_pod_again_and_gets_the_result(
    tmp_path: Path, cluster: tuple[KubeAPI, Path]
) -> None:
    async def scenario() -> None:
        async with running(tmp_path, cluster[1]) as engine:
            [task] = await submit(engine, "import time\ntime.sleep(1.5)\nz = 'survived'\n", ["z"], "survivor")
            await until_running(engine, task)
        async with running(tmp_path, cluster[1]) as engine:  # the pod ran on meanwhile
            [task] = await settle(engine, [engine.scheduler.lookup(task.id) or task], 30)
            assert task.state is State.COMPLETED and task.attempts == 1, (task.state, task.error)
            assert outputs((await engine.result(task.id))[1]) == {"z": "survived"}

    run(scenario)


def test_a_wrong_token_is_a_clear_error(tmp_path: Path, cluster: tuple[KubeAPI, Path]) -> None:
    api, config = cluster
    config.write_text(config.read_text().replace("hetflow-test-token", "not-the-token"))

    async def scenario() -> None:
        async with running(tmp_path, config) as engine:
            [task] = await submit(engine, "x = 1\n", ["x"], "refused")
            [task] = await settle(engine, [task], 30)
            assert task.state is State.FAILED and "the Kubernetes API refused" in task.error["message"], task.error
        assert api.jobs == {}

    run(scenario)


def test_a_jupyter_server_sigkilled_mid_job_re_attaches_and_the_task_ran_once(
    tmp_path: Path, cluster: tuple[KubeAPI, Path]
) -> None:
    api, config = cluster
    runs = tmp_path / "runs.txt"
    server = JupyterServer(tmp_path / "server", hetflow={"executors": {"k8s": settings(config)}})
    outside = server.outside_kernel(tmp_path / "kernel")
    try:
        running = outside.start(
            f"%%remote executor=k8s name=survivor cache=false\nimport time\nopen({str(runs)!r}, 'a').write('run\\n')\n"
            "for i in range(4):\n    print('tick', i, flush=True)\n    time.sleep(0.5)\nsurvivor = 'done'\n"
        )
        deadline = time.monotonic() + 30
        while not runs.exists():
            assert time.monotonic() < deadline, "the pod did not start"
            time.sleep(0.05)
        server.kill()
        time.sleep(0.5)
        server.start()
        outside.collect(*running, timeout=60).check()
        assert outside.value("survivor") == "done"
        assert runs.read_text() == "run\n", "the task ran more than once"
        assert len(jobs_sent(api)) == 1
        history = server.json("GET", "hetflow/api/tasks/survivor")["events"]
        assert any("re-attaching" in (e["message"] or "") for e in history)
    finally:
        outside.shutdown()
        server.stop()


def test_pod_changes_come_by_one_watch_not_by_polling(tmp_path: Path, cluster: tuple[KubeAPI, Path]) -> None:
    """An executor that lists the pods every 30 s: only the watch (and the log it follows) can bring the
    tasks back in time."""
    api, config = cluster

    async def scenario() -> None:
        async with running(tmp_path, config, poll_interval=30) as engine:
            for n in range(3):
                started = time.monotonic()
                [task] = await submit(engine, f"w = {n}\n", ["w"], f"watched{n}")
                [task] = await settle(engine, [task], 20)
                assert task.state is State.COMPLETED, task.error
                assert time.monotonic() - started < 10, "the task came back with a poll, not the watch"
        assert api.watches == 1, f"{api.watches} watches for 3 tasks"

    run(scenario)


def test_a_large_input_goes_to_s3_once_and_the_pods_read_it_with_their_own_role(
    tmp_path: Path, cluster: tuple[KubeAPI, Path], moto_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Beyond what a Secret holds: the blobs go to moto's S3 with the engine's aws credential; the pods (run by the
    double with the node's environment, standing for their IRSA role) read them with other keys."""
    api, config = cluster
    moto = Moto(moto_url)
    moto.reset()
    moto.client("s3").create_bucket(Bucket="k8s-blobs")
    for name, value in {**ROLE_KEYS, "AWS_ENDPOINT_URL": moto.url, "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(name, value)
    big = bytes(range(256)) * 8192  # 2 MiB: twice what a Secret holds
    s3 = {"s3_prefix": "s3://k8s-blobs/team", "s3_credential": "aws-k8s", "s3_endpoint_url": moto.url}

    async def scenario() -> None:
        async with running(tmp_path, config, **s3) as engine:
            keys = {"access_key_id": "AKIAENGINEFAKE", "secret_access_key": "engine-secret-not-real"}
            engine.credentials.put("aws-k8s", "aws", keys)
            elements = [cloudpickle.dumps(n) for n in range(3)]
            fan = await submit(engine, "n = len(big) + k\n", ["n"], "fan", elements, {"big": big}, foreach="k")
            [later] = await submit(engine, "m = len(big)\n", ["m"], "later", None, {"big": big})
            done = await settle(engine, [*fan, later], 60)
            assert all(t.state is State.COMPLETED for t in done), [t.error for t in done]
            assert [outputs((await engine.result(t.id))[1]) for t in done] == [
                {"n": len(big)},
                {"n": len(big) + 1},
                {"n": len(big) + 2},
                {"m": len(big)},
            ]
        versions = moto.client("s3").list_object_versions(Bucket="k8s-blobs", Prefix="team/blobs/").get("Versions", [])
        assert sum(v["Size"] for v in versions) < 1.5 * len(big), [v["Size"] for v in versions]
        secrets = [m for m in api.received if m["kind"] == "Secret"]
        assert all(sum(map(len, m["data"].values())) < 200_000 for m in secrets), "the input went in a Secret"

    run(scenario)


def test_a_kubeconfig_credential_reaches_the_cluster_and_is_never_shown(
    tmp_path: Path, cluster: tuple[KubeAPI, Path]
) -> None:
    api, config = cluster
    text = config.read_text()

    async def scenario() -> None:
        async with engines.running(
            tmp_path, {"k8s": {**settings(config), "kubeconfig": "", "credential": "kube"}}, "k8s"
        ) as engine:
            engine.credentials.put("kube", "kubeconfig", {"kubeconfig": text})
            [task] = await submit(engine, "k = 'via credential'\n", ["k"], "credentialed")
            [task] = await settle(engine, [task], 30)
            assert task.state is State.COMPLETED, task.error
            shown = str(engine.describe_executors()) + str(engine.credentials.describe())
            assert "hetflow-test-token" not in shown and "credential kube" in shown
        sent = str(api.received)
        assert "hetflow-test-token" not in sent, "the token went into a manifest"

    run(scenario)
