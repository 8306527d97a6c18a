"""Executor settings as a site writes them: cell options given as an executor's defaults (a partition, an account),
checked like a cell's; a remote root that names the remote shell's variables."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import engines
from engines import payload, run, settle
from hetflow_server.models import State, TaskSpec
from hetflow_server.protocol import SpecError


def spec(code: str, **extra: object) -> TaskSpec:
    return TaskSpec(code=code, inputs={}, outputs=[], name="t", cache=False, **extra)  # type: ignore[arg-type]


def test_cell_options_in_an_executors_settings_are_its_defaults_and_a_cell_overrides_them(tmp_path: Path) -> None:
    settings = {"kind": "slurm", "host": "localhost", "partition": "debug", "account": "m1234", "exclusive": True}

    async def scenario() -> None:
        async with engines.running(tmp_path, {"cluster": settings}, "cluster") as engine:
            assert engine.executors["cluster"].defaults == {"partition": "debug", "account": "m1234", "exclusive": True}
            [task], _ = await engine.submit(spec("pass\n", options={"partition": "gpu"}), payload("pass\n", []))
            assert task.options == {"partition": "gpu", "account": "m1234", "exclusive": True}
            await engine.cancel(task.id)

    run(scenario)


def test_a_bad_default_or_an_unknown_setting_stops_the_engine_with_what_is_wrong(tmp_path: Path) -> None:
    async def start(settings: dict[str, object]) -> None:
        async with engines.running(tmp_path, {"cluster": {"kind": "slurm", **settings}}, "cluster"):
            pass

    with pytest.raises(SpecError, match=r"executor 'cluster' \(slurm\): time=forever: Slurm's time format"):
        run(lambda: start({"time": "forever"}))
    with pytest.raises(SpecError, match=r"unknown setting 'partion'.*defaults for the cell options \(partition, "):
        run(lambda: start({"partion": "debug"}))


def test_a_remote_root_naming_a_variable_is_expanded_by_the_remote_shell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HETFLOW_TEST_SCRATCH", str(tmp_path / "scratch"))
    executors = {"here": {"kind": "ssh", "host": "localhost", "remote_root": "$HETFLOW_TEST_SCRATCH/hetflow"}}

    async def scenario() -> None:
        async with engines.running(tmp_path, executors, "here") as engine:
            [task], _ = await engine.submit(spec("x = 1\n"), payload("x = 1\n", ["x"]))
            [task] = await settle(engine, [task])
            assert task.state is State.COMPLETED, task.error

    run(scenario)
    assert (tmp_path / "scratch" / "hetflow").is_dir()
    assert not any("$" in name for name in os.listdir(Path.home())), "a folder named after the variable was made"


def test_the_engine_reads_a_folders_config_files_in_the_order_the_jupyter_server_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from traitlets.config import Application

    from hetflow_server.settings import Hetflow, load_config

    (tmp_path / "jupyter_server_config.py").write_text(
        "c.Hetflow.default_executor = 'from-py'\nc.Hetflow.retry_backoff = 7.0\n"
    )
    (tmp_path / "jupyter_server_config.json").write_text('{"Hetflow": {"default_executor": "from-json"}}')
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(tmp_path))
    monkeypatch.setenv("JUPYTER_CONFIG_PATH", "")
    ours = Hetflow(config=load_config())
    jupyter = Application()
    jupyter.load_config_file("jupyter_server_config", path=[str(tmp_path)])
    theirs = Hetflow(config=jupyter.config)
    assert (ours.default_executor, ours.retry_backoff) == (theirs.default_executor, theirs.retry_backoff)
    assert (ours.default_executor, ours.retry_backoff) == ("from-json", 7.0)
