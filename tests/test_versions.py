"""What one side pickles the other must read: a remote side (an SSH host, a Dask cluster, a runner anywhere) whose
cloudpickle major version differs from the engine's is refused with a message that says what to install.

The "other" cloudpickle is the real one reporting another version: a shim package on PYTHONPATH loads the
installed cloudpickle and changes only its `__version__`, so the processes involved work and only the check can
tell them apart.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import cloudpickle
import pytest

import engines
from engines import payload, run, settle
from hetflow_server.models import State, TaskSpec

pytestmark = pytest.mark.timeout(120)

MINE = cloudpickle.__version__
OTHER = f"{int(MINE.split('.')[0]) + 7}.0.0"

SHIM = f"""\
import importlib.util, sys
spec = importlib.util.spec_from_file_location(
    "cloudpickle", {cloudpickle.__file__!r}, submodule_search_locations=[{os.path.dirname(cloudpickle.__file__)!r}]
)
module = importlib.util.module_from_spec(spec)
sys.modules["cloudpickle"] = module
spec.loader.exec_module(module)
module.__version__ = {OTHER!r}
"""


@pytest.fixture
def other_cloudpickle(tmp_path: Path) -> dict[str, str]:
    """An environment whose `import cloudpickle` is the installed one claiming version OTHER."""
    shim = tmp_path / "shim" / "cloudpickle"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text(SHIM)
    return {**os.environ, "PYTHONPATH": str(shim.parent)}


def test_a_task_pickled_with_another_cloudpickle_major_fails_with_what_to_install(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with engines.running(tmp_path, {"local": {"kind": "local", "workers": 1}}, "local") as engine:
            data = pickle.loads(payload("x = 1\n", ["x"]))
            data["cloudpickle"] = OTHER  # as a kernel with another cloudpickle would send it
            blob = pickle.dumps(data)
            spec = TaskSpec(code="x = 1\n", inputs={}, outputs=["x"], name="x", cache=False)
            [task], _ = await engine.submit(spec, blob)
            [task] = await settle(engine, [task])
            assert task.state is State.FAILED and task.error
            assert task.error["type"] == "EnvironmentError", task.error
            message = task.error["message"]
            assert f"pickled with cloudpickle {OTHER}" in message and f"has cloudpickle {MINE}" in message, message
            assert f"install cloudpickle=={OTHER.split('.')[0]}.*" in message, message

    run(scenario)


def test_an_ssh_host_whose_cloudpickle_major_differs_is_refused_before_any_task_runs(
    tmp_path: Path, other_cloudpickle: dict[str, str]
) -> None:
    python = f"env PYTHONPATH={other_cloudpickle['PYTHONPATH']} {sys.executable}"
    executors = {"far": {"kind": "ssh", "host": "localhost", "python": python, "remote_root": str(tmp_path / "r")}}
    marker = tmp_path / "ran"

    async def scenario() -> None:
        async with engines.running(tmp_path, executors, "far") as engine:
            code = f"open({str(marker)!r}, 'w').write('ran')\n"
            [task], _ = await engine.submit(
                TaskSpec(code=code, inputs={}, outputs=[], name="t", cache=False), payload(code, [])
            )
            [task] = await settle(engine, [task])
            assert task.state is State.FAILED and task.error, task
            message = task.error["message"]
            assert f"cloudpickle {OTHER} there, {MINE} here (the major must match)" in message, message
            assert not marker.exists()

    run(scenario)


@contextlib.contextmanager
def dask_scheduler(env: dict[str, str], scheduler_file: Path) -> Iterator[str]:
    """A Dask scheduler in a process of its own, started with `env`; its address."""
    scheduler = subprocess.Popen(
        [
            *(sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0"),
            *("--no-dashboard", "--scheduler-file", str(scheduler_file)),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not scheduler_file.exists():
            assert time.monotonic() < deadline and scheduler.poll() is None, "the Dask scheduler did not start"
            time.sleep(0.1)
        time.sleep(0.2)  # written in one go, but let it be complete
        yield json.loads(scheduler_file.read_text())["address"]
    finally:
        scheduler.terminate()
        scheduler.wait(timeout=20)


def test_a_dask_cluster_whose_cloudpickle_major_differs_is_refused_with_what_to_install(
    tmp_path: Path, other_cloudpickle: dict[str, str]
) -> None:
    with dask_scheduler(other_cloudpickle, tmp_path / "scheduler.json") as address:

        async def scenario() -> None:
            async with engines.running(tmp_path, {"far": {"kind": "dask", "address": address}}, "far") as engine:
                spec = TaskSpec(code="x = 1\n", inputs={}, outputs=["x"], name="x", cache=False)
                [task], _ = await engine.submit(spec, payload("x = 1\n", ["x"]))
                [task] = await settle(engine, [task])
                assert task.state is State.FAILED and task.error and task.error["type"] == "DaskMismatch", task.error
                message = task.error["message"]
                assert f"scheduler ({OTHER})" in message, message
                assert f"install cloudpickle=={MINE.split('.')[0]}.* on the cluster" in message, message
                assert engine.executors["far"].describe()["connected"] is False

        with pytest.warns(Warning):  # distributed's own table of mismatched versions
            run(scenario)


def test_an_input_that_cannot_be_unpickled_under_another_python_names_both_versions(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with engines.running(tmp_path, {"local": {"kind": "local", "workers": 1}}, "local") as engine:
            data = pickle.loads(payload("y = f\n", ["y"]))
            data["inputs"]["f"] = b"cno_such_module_here\nThing\n."  # a pickle whose reader lacks what it names
            data["python"] = "3.99"  # as a kernel on another Python would send it
            spec = TaskSpec(code="y = f\n", inputs={"f": "x"}, outputs=["y"], name="y", cache=False)
            [task], _ = await engine.submit(spec, pickle.dumps(data))
            [task] = await settle(engine, [task])
            assert task.state is State.FAILED and task.error and task.error["type"] == "UnpicklingError"
            message = task.error["message"]
            assert "input 'f' could not be unpickled here" in message and "the kernel runs Python 3.99" in message
            assert "functions travel as bytecode, so tasks must run on Python 3.99" in message, message

    run(scenario)
