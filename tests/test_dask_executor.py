"""The dask executor under a real engine and a real LocalCluster (no kernel): results kept on the cluster, data
moved worker to worker, packing, failures of workers and schedulers, and the runner reaching workers by value."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

import engines
from engines import outputs, run, settle, submit, until_running
from hetflow_server.engine import Engine
from hetflow_server.models import State
from hetflow_server.store import Store

pytestmark = pytest.mark.timeout(180)


def running(tmp_path: Path, **dask: Any) -> contextlib.AbstractAsyncContextManager[Engine]:
    return engines.running(tmp_path, {"dask": {"kind": "dask", "workers": 2, **dask}}, "dask")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_task_runs_on_the_cluster_and_its_result_stays_there_until_fetched(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running(tmp_path) as engine:
            executor = engine.executors["dask"]
            assert "not started" in str(executor.describe()["address"]) or executor.describe().get("connected") is False
            [task] = await submit(engine, "print('hello from dask')\nanswer = 6 * 7\n", ["answer"], "answer")
            [task] = await settle(engine, [task])
            assert task.state is State.COMPLETED, task.error
            assert task.handle and task.handle["dask_key"].startswith("hetflow-pack-") and task.handle["worker"]
            assert not engine.store.has_blob(task.result_hash), "the result left the cluster before it was asked for"
            assert executor.holds(task.id, task.result_hash) and executor.describe()["results_kept"] == 1
            assert b"hello from dask" in engine.logs(task.id)
            with pytest.raises(ValueError):  # the engine's client is not every dask user's default client
                __import__("distributed").client.default_client()
            _, result = await engine.result(task.id)
            assert hashlib.sha256(result).hexdigest() == task.result_hash
            assert outputs(result) == {"answer": 42}
            assert engine.store.has_blob(task.result_hash)

    run(scenario)


def test_a_value_the_kernel_waits_for_comes_back_with_its_outcome_and_nothing_stays_on_the_cluster(
    tmp_path: Path,
) -> None:
    """hetflow.run and a wait=true cell bring their values (TaskSpec.bring): the result is in the store when the
    task completes, not a round trip later, and the cluster lets go of it; a downstream task still reads it."""

    async def scenario() -> None:
        async with running(tmp_path) as engine:
            executor = engine.executors["dask"]
            [a] = await submit(engine, "a = list(range(100))\n", ["a"], "a", bring=True)
            [kept] = await submit(engine, "k = 1\n", ["k"], "k")
            a, kept = await settle(engine, [a, kept])
            assert (a.state, kept.state) == (State.COMPLETED, State.COMPLETED), a.error
            assert engine.store.has_blob(a.result_hash) and not executor.holds(a.id, a.result_hash)
            assert not engine.store.has_blob(kept.result_hash) and executor.holds(kept.id, kept.result_hash)
            assert executor.describe()["results_kept"] == 1
            [b] = await submit(engine, "b = sum(a)\n", ["b"], "b", refs={"a": [a.id, "a"]}, bring=True)
            [b] = await settle(engine, [b])
            assert outputs(engine.store.get_blob(b.result_hash)) == {"b": sum(range(100))}

    run(scenario)


def test_a_chain_runs_its_second_task_with_the_first_ones_output_kept_on_the_cluster(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running(tmp_path) as engine:
            [a] = await submit(engine, "a = list(range(1000))\n", ["a"], "a")
            [b] = await submit(engine, "b = sum(a)\n", ["b"], "b", refs={"a": [a.id, "a"]})
            a, b = await settle(engine, [a, b])
            assert (a.state, b.state) == (State.COMPLETED, State.COMPLETED), b.error
            _, result = await engine.result(b.id)
            assert outputs(result) == {"b": sum(range(1000))}
            assert not engine.store.has_blob(a.result_hash), "the upstream result went through the engine"

    run(scenario)


def test_a_foreach_of_100_with_3_failures_is_packed_and_a_rerun_runs_only_the_3(tmp_path: Path) -> None:
    runs, fixed = tmp_path / "runs", tmp_path / "fixed"
    code = (
        f"import os\nopen({str(runs)!r}, 'a').write(f'{{i}}\\n')\n"
        f"if i in (7, 42, 99) and not os.path.exists({str(fixed)!r}):\n    raise ValueError(f'element {{i}} broke')\n"
        "sq = i * i\n"
    )

    async def scenario() -> None:
        async with running(tmp_path) as engine:
            elements = [cloudpickle.dumps(i) for i in range(100)]
            tasks = await settle(engine, await submit(engine, code, ["sq"], "sq", elements, foreach="i"))
            failed = [t for t in tasks if t.state is State.FAILED]
            assert sorted(t.element for t in failed) == [7, 42, 99]
            assert sum(t.state is State.COMPLETED for t in tasks) == 97
            assert "element 42 broke" in next(t for t in failed if t.element == 42).error["message"]
            keys = {t.handle["dask_key"] for t in tasks}
            threads = 2  # 2 workers of 1 thread: a batch spreads over twice the threads
            assert len(keys) == math.ceil(100 / math.ceil(100 / (2 * threads))), f"100 tasks went out as {len(keys)}"
            assert {t.handle["pack"] for t in tasks} >= {"1 of 25", "25 of 25"}
            fixed.touch()
            again = await engine.rerun(failed[0].id)
            assert sorted(t.element for t in again) == [7, 42, 99]
            tasks = await settle(engine, tasks)
            assert all(t.state is State.COMPLETED for t in tasks)
            results = await engine.group_results(tasks[0].id)
            assert [outputs(result)["sq"] for _, result in results] == [i * i for i in range(100)]
            assert len(runs.read_text().split()) == 103

    run(scenario)


def test_a_task_that_kills_its_worker_completes_on_its_retry(tmp_path: Path) -> None:
    """The code notes the pid of each run and kills its worker on the first: it ran exactly twice, the first
    worker is gone, and the result is the second run's, from a new worker process."""
    runs = tmp_path / "runs"
    code = (
        f"import os\nopen({str(runs)!r}, 'a').write(f'{{os.getpid()}}\\n')\n"
        f"if len(open({str(runs)!r}).read().split()) == 1:\n    os.kill(os.getpid(), 9)\nsurvivor = os.getpid()\n"
    )

    async def scenario() -> None:
        async with running(tmp_path) as engine:
            [task] = await settle(engine, await submit(engine, code, ["survivor"], "killer", retries=1))
            assert task.state is State.COMPLETED and task.attempts == 2, task.error
            events = " ".join(event["message"] or "" for event in engine.history(task.id))
            assert "WorkerDied" in events, events
            killed, survived = map(int, runs.read_text().split())  # exactly two runs
            with pytest.raises(ProcessLookupError):
                os.kill(killed, 0)
            _, result = await engine.result(task.id)
            assert outputs(result) == {"survivor": survived} and survived != killed

    run(scenario)


def test_cancelling_a_task_alone_in_its_pack_cancels_its_dask_task(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running(tmp_path) as engine:
            [task] = await submit(engine, "import time\ntime.sleep(30)\nlong = 1\n", ["long"], "long")
            await until_running(engine, task)
            task = await engine.cancel(task.id)
            assert task.state is State.CANCELLED
            assert engine.executors["dask"].describe()["packs"] == 0

    run(scenario)


def test_an_unreachable_scheduler_fails_the_task_quickly(tmp_path: Path) -> None:
    address = f"tcp://127.0.0.1:{free_port()}"

    async def scenario() -> None:
        async with running(tmp_path, address=address, connect_timeout=2) as engine:
            start = time.monotonic()
            [task] = await settle(engine, await submit(engine, "x = 1\n", ["x"], "far"), timeout=30)
            assert time.monotonic() - start < 10
            assert task.state is State.FAILED and task.error["type"] == "DaskUnreachable", task.error
            assert f"cannot reach the Dask scheduler at {address} within 2 s" in task.error["message"]
            assert "c.Hetflow.executors" in task.error["message"]

    run(scenario)


def test_a_scheduler_that_goes_away_fails_its_running_task_clearly(tmp_path: Path) -> None:
    from distributed import LocalCluster

    async def scenario() -> None:
        cluster = await LocalCluster(
            n_workers=1, threads_per_worker=1, host="127.0.0.1", dashboard_address="127.0.0.1:0", asynchronous=True
        )
        address = cluster.scheduler_address
        try:
            async with running(tmp_path, address=address, connect_timeout=2) as engine:
                [task] = await submit(engine, "import time\ntime.sleep(60)\nslept = 1\n", ["slept"], "sleeper")
                while (engine.scheduler.lookup(task.id) or task).state is not State.RUNNING:
                    await asyncio.sleep(0.05)
                await cluster.close()
                [task] = await settle(engine, [task], timeout=40)
                assert task.state is State.FAILED, task.error
                assert task.error["type"] == "DaskSchedulerGone" and address in task.error["message"], task.error
                [again] = await settle(engine, await submit(engine, "x = 1\n", ["x"], "after"), timeout=20)
                assert again.error["type"] == "DaskUnreachable", again.error  # a new connection, failing fast
        finally:
            await cluster.close()

    run(scenario)


WITHOUT_HETFLOW = """
import runpy, sys

class NoHetflow:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("hetflow", "hetflow_server"):
            raise ImportError(f"{name} is not installed here")

sys.meta_path.insert(0, NoHetflow())
sys.argv = sys.argv[1:]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


def without_hetflow(module: str, *args: str) -> subprocess.Popen[bytes]:
    """A Dask command (scheduler, worker) in a process that cannot import hetflow."""
    return subprocess.Popen([sys.executable, "-c", WITHOUT_HETFLOW, module, *args, "--host", "127.0.0.1"])


def test_the_scheduler_and_workers_need_no_hetflow_installed(tmp_path: Path) -> None:
    """The runner's functions travel by value: a chain runs, and its result is fetched, on a scheduler and a worker
    that cannot import hetflow."""
    address_file = tmp_path / "scheduler.json"
    scheduler = without_hetflow(
        "distributed.cli.dask_scheduler", "--port", "0", "--no-dashboard", "--scheduler-file", str(address_file)
    )
    worker = without_hetflow(
        "distributed.cli.dask_worker", "--scheduler-file", str(address_file), "--no-nanny", "--no-dashboard"
    )

    async def scenario() -> None:
        while not address_file.exists():
            await asyncio.sleep(0.05)
        address = json.loads(address_file.read_text())["address"]
        async with running(tmp_path, address=address) as engine:
            [a] = await submit(engine, "a = 20\n", ["a"], "a")
            [b] = await submit(engine, "b = a + 1\n", ["b"], "b", refs={"a": [a.id, "a"]})
            a, b = await settle(engine, [a, b], timeout=30)
            assert b.state is State.COMPLETED, b.error
            assert not engine.store.has_blob(a.result_hash)
            _, result = await engine.result(b.id)
            assert outputs(result) == {"b": 21}

    try:
        run(scenario)
    finally:
        for process in (worker, scheduler):
            process.terminate()
            process.wait(10)


def test_a_task_running_when_the_engine_closes_runs_again_once_under_the_next_engine(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running(tmp_path) as engine:
            [task] = await submit(engine, "import time\ntime.sleep(1)\nnapped = 1\n", ["napped"], "napper")
            await until_running(engine, task)
        store = Store(tmp_path / "store")
        assert store.get_task(task.id).state is State.RUNNING, "closing the engine ended the task"
        store.close()
        async with running(tmp_path) as engine:
            [task] = await settle(engine, [task])
            assert task.state is State.COMPLETED and task.restarts == 1, task.error

    run(scenario)
