"""The braket executor with `device=local`: real circuits on Braket's LocalSimulator in a warm worker, through a
real engine and through a real kernel (`%%remote executor=braket`, `hetflow.submit`/`hetflow.run`)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import engines
from engines import outputs, run, settle, submit, until_running
from hetflow_server.engine import Engine
from hetflow_server.models import State
from hetflow_server.protocol import SpecError
from kernels import Kernel

pytestmark = pytest.mark.timeout(180)

BELL = """\
from braket.circuits import Circuit
counts = dict(device.run(Circuit().h(0).cnot(0, 1), shots=shots).result().measurement_counts)
"""

PARAMETERIZED = """\
from braket.circuits import Circuit, FreeParameter
from braket.circuits.observables import Z
theta = FreeParameter("theta")
circuit = Circuit().rx(0, theta).expectation(observable=Z(), target=[0])
values = [device.run(circuit, shots=0, inputs={"theta": t}).result().values[0] for t in (0.0, 1.0, 3.14159)]
"""


def running(tmp_path: Path, **braket: Any) -> contextlib.AbstractAsyncContextManager[Engine]:
    return engines.running(tmp_path, {"braket": {"kind": "braket", **braket}}, "braket")


def test_a_bell_pair_on_the_local_simulator_gives_only_00_and_11(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running(tmp_path, shots=400) as engine:
            [task] = await submit(engine, BELL, ["counts"], "bell")
            [task] = await settle(engine, [task])
            assert task.state is State.COMPLETED, task.error
            counts = outputs((await engine.result(task.id))[1])["counts"]
            assert set(counts) == {"00", "11"} and sum(counts.values()) == 400, counts  # shots from the settings
            assert 120 < counts["00"] < 280, counts

    run(scenario)


def test_a_parameterized_circuit_gives_the_exact_expectations_and_a_cell_option_sets_shots(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running(tmp_path) as engine:
            [exact] = await submit(engine, PARAMETERIZED, ["values"], "rx")
            [bell] = await submit(engine, BELL, ["counts"], "bell", options={"shots": "10", "device": "braket_dm"})
            exact, bell = await settle(engine, [exact, bell])
            assert exact.state is State.COMPLETED, exact.error
            values = outputs((await engine.result(exact.id))[1])["values"]
            assert values == pytest.approx([1.0, math.cos(1.0), math.cos(3.14159)], abs=1e-9)
            assert bell.state is State.COMPLETED, bell.error
            counts = outputs((await engine.result(bell.id))[1])["counts"]
            assert sum(counts.values()) == 10 and set(counts) <= {"00", "11"}  # on the density-matrix simulator

    run(scenario)


def test_a_local_only_executor_is_healthy_without_any_aws_settings(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running(tmp_path) as engine:
            checked = await engine.executors["braket"].check()
            assert checked["healthy"] is True and "error" not in checked and "s3_prefix" not in checked, checked

    run(scenario)


def test_the_worker_keeps_its_device_between_tasks(tmp_path: Path) -> None:
    code = "import os\nwho = (os.getpid(), id(device))\n"

    async def scenario() -> None:
        async with running(tmp_path) as engine:
            first, second = [(await submit(engine, code, ["who"], f"who{n}"))[0] for n in range(2)]
            first, second = await settle(engine, [first, second])
            assert first.state is second.state is State.COMPLETED, (first.error, second.error)
            seen = [outputs((await engine.result(t.id))[1])["who"] for t in (first, second)]
            assert seen[0] == seen[1], "a second task got a new worker or a new device"

    run(scenario)


def test_a_running_circuit_loop_is_cancelled_and_the_worker_comes_back(tmp_path: Path) -> None:
    endless = "from braket.circuits import Circuit\nwhile True:\n    device.run(Circuit().h(0), shots=10).result()\n"

    async def scenario() -> None:
        async with running(tmp_path) as engine:
            [task] = await submit(engine, endless, [], "endless")
            await until_running(engine, task)
            await engine.cancel(task.id)
            [task] = await settle(engine, [task])
            assert task.state is State.CANCELLED
            [after] = await settle(engine, await submit(engine, BELL, ["counts"], "after"))
            assert after.state is State.COMPLETED, after.error

    run(scenario)


def test_an_unknown_device_is_refused_before_anything_runs(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running(tmp_path) as engine:
            with pytest.raises(SpecError, match="device=qpu-of-my-dreams: name a local simulator"):
                await submit(engine, BELL, ["counts"], "bad", options={"device": "qpu-of-my-dreams"})
            assert engine.tasks() == []

    run(scenario)


def test_an_executor_configured_with_an_unknown_device_does_not_start(tmp_path: Path) -> None:
    async def scenario() -> None:
        with pytest.raises(SpecError, match=r"executor 'braket' \(braket\): device='x': name a local simulator"):
            async with running(tmp_path, device="x"):
                pass

    run(scenario)


# --------------------------------------------------------------------------------------- through a kernel


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kernel]:
    config = {"executors": {"local": {"kind": "local"}, "braket": {"kind": "braket", "shots": 200}}}
    k = Kernel.local(tmp_path_factory.mktemp("braket"), config=config)
    yield k
    k.shutdown()


def test_a_remote_cell_on_braket_brings_the_counts_back(kernel: Kernel) -> None:
    kernel.run(f"%%remote executor=braket shots=50\n{BELL}", timeout=90).check()
    counts = kernel.value("counts")
    assert set(counts) <= {"00", "11"} and sum(counts.values()) == 50, counts


def test_hetflow_run_hands_the_device_to_a_function_and_submit_gives_futures(kernel: Kernel) -> None:
    kernel.run(
        "import hetflow\n"
        "def expectation(theta, device):\n"
        "    from braket.circuits import Circuit\n"
        "    from braket.circuits.observables import Z\n"
        "    circuit = Circuit().rx(0, theta).expectation(observable=Z(), target=[0])\n"
        "    return device.run(circuit, shots=0).result().values[0]\n"
        "first = hetflow.run(expectation, 0.5, executor='braket')\n"
        "futures = [hetflow.submit(expectation, t, executor='braket') for t in (0.0, 1.0, 2.0)]\n"
        "rest = [f.result() for f in futures]\n",
        timeout=90,
    ).check()
    assert kernel.value("first") == pytest.approx(math.cos(0.5), abs=1e-9)
    assert kernel.value("rest") == pytest.approx([1.0, math.cos(1.0), math.cos(2.0)], abs=1e-9)
    assert kernel.value("__import__('hetflow.client').client.get_client().find('expectation').executor") == "braket"


def test_hetflow_run_raises_the_remote_error_and_refuses_bad_options(kernel: Kernel) -> None:
    failed = kernel.run("import hetflow\nhetflow.run(lambda x: 1 / x, 0, cache=False)")
    assert not failed.ok and "ZeroDivisionError" in failed.traceback, failed.traceback
    bad = kernel.run("hetflow.run(abs, -1, executor='braket', shots='many')")
    assert not bad.ok and "shots=many" in bad.traceback, bad.traceback
    misplaced = kernel.run("hetflow.run(abs, -1, foreach='x:[1]')")
    assert not misplaced.ok and "foreach= is for %%remote cells" in misplaced.traceback
    assert kernel.value("hetflow.run(abs, -3)") == 3  # on the default executor (local), no device needed
