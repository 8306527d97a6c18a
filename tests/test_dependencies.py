"""Dependencies in the engine itself (local executor, no kernel): an engine restart with tasks waiting, re-runs
that re-run completed dependents only when their input changed, cancel through a chain, cache keys of upstream."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

import engines
from engines import outputs, run, settle, submit, until_running
from hetflow_server.engine import Engine
from hetflow_server.models import State
from hetflow_server.protocol import StoreError


def running(tmp_path: Path) -> contextlib.AbstractAsyncContextManager[Engine]:
    return engines.running(tmp_path, {"local": {"kind": "local", "workers": 2}}, "local")


async def result(engine: Engine, ref: str) -> dict[str, Any]:
    return outputs((await engine.result(ref))[1])


def test_a_task_waiting_for_another_survives_an_engine_restart(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running(tmp_path) as engine:
            [a] = await submit(engine, "import time\ntime.sleep(1.5)\na = 20\n", ["a"], "a")
            [b] = await submit(engine, "b = a + 1\n", ["b"], "b", refs={"a": [a.id, "a"]})
            await until_running(engine, a)
            assert engine.scheduler.lookup(b.id).state is State.PENDING
        async with running(tmp_path) as engine:  # a's worker ran on; b was still waiting
            a, b = await settle(engine, [a, b])
            assert a.state is State.COMPLETED and b.state is State.COMPLETED, (a.error, b.error)
            assert (await result(engine, "b"))["b"] == 21
            assert b.attempts == 1

    run(scenario)


def test_rerun_reruns_a_completed_dependent_only_when_its_input_changed(tmp_path: Path) -> None:
    source, runs = tmp_path / "source.txt", tmp_path / "runs.txt"
    source.write_text("1")
    note = f"open({str(runs)!r}, 'a').write"

    async def scenario() -> None:
        async with running(tmp_path) as engine:
            [a] = await submit(engine, f"{note}('a')\na = int(open({str(source)!r}).read())\n", ["a"], "a")
            [b] = await submit(engine, f"{note}('b')\nb = a * 10\n", ["b"], "b", refs={"a": [a.id, "a"]})
            await settle(engine, [a, b])
            assert runs.read_text() == "ab"

            await settle(engine, await engine.rerun("a"))  # same result: b is left alone
            await settle(engine, [b])
            assert runs.read_text() == "aba"

            source.write_text("2")
            await settle(engine, await engine.rerun("a"))
            for _ in range(100):  # b runs again once a's new result is in
                if runs.read_text() == "abaab" and engine.scheduler.lookup(b.id).state is State.COMPLETED:
                    break
                await asyncio.sleep(0.05)
            assert runs.read_text() == "abaab"
            assert (await result(engine, "b"))["b"] == 20

    run(scenario)


def test_cancelling_an_upstream_cancels_the_chain_below_it(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running(tmp_path) as engine:
            [a] = await submit(engine, "import time\ntime.sleep(30)\na = 1\n", ["a"], "a")
            [b] = await submit(engine, "b = a + 1\n", ["b"], "b", refs={"a": [a.id, "a"]})
            [c] = await submit(engine, "c = b + 1\n", ["c"], "c", refs={"b": [b.id, "b"]})
            await until_running(engine, a)
            await engine.cancel("a")
            a, b, c = await settle(engine, [a, b, c])
            assert [t.state for t in (a, b, c)] == [State.CANCELLED] * 3
            assert b.error["message"] == c.error["message"] == "upstream a was cancelled"
            assert b.attempts == c.attempts == 0  # never ran

    run(scenario)


def test_a_dependent_of_a_failed_task_submitted_later_is_cancelled_at_once(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running(tmp_path) as engine:
            [a] = await settle(engine, await submit(engine, "raise ValueError('no')\n", ["a"], "a"))
            assert a.state is State.FAILED
            [b] = await submit(engine, "b = 1\n", ["b"], "b", after=["a"])
            assert b.state is State.CANCELLED and b.error["message"] == "upstream a failed"

    run(scenario)


def test_a_task_waiting_for_an_upstream_that_is_rerun_waits_for_the_rerun(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running(tmp_path) as engine:
            [a] = await settle(engine, await submit(engine, "import time\ntime.sleep(1)\na = 1\n", ["a"], "a"))
            [b] = await submit(engine, "import time\ntime.sleep(0.3)\nb = 2\n", ["b"], "b")
            [d] = await submit(engine, "d = a + b\n", ["d"], "d", refs={"a": [a.id, "a"], "b": [b.id, "b"]})
            await engine.rerun("a")  # a runs again, longer than b: d must wait for both, then run
            [d] = await settle(engine, [d], timeout=20)
            assert d.state is State.COMPLETED and (await result(engine, "d"))["d"] == 3

    run(scenario)


def test_elements_of_a_pack_do_not_share_an_upstream_object(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with engines.running(tmp_path, {"local": {"kind": "local", "workers": 1}}, "local") as engine:
            [u] = await settle(engine, await submit(engine, "data = []\n", ["data"], "u"))
            elements = [cloudpickle.dumps(s) for s in range(4)]
            code = "data.append(s)\nr = list(data)\n"
            tasks = await settle(
                engine, await submit(engine, code, ["r"], "r", elements, foreach="s", refs={"data": [u.id, "data"]})
            )
            assert [(await result(engine, t.id))["r"] for t in tasks] == [[0], [1], [2], [3]]

    run(scenario)


def test_after_a_foreach_waits_for_every_element(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running(tmp_path) as engine:
            elements = [cloudpickle.dumps(s) for s in (1.0, 0.0)]
            fan = await submit(engine, "import time\ntime.sleep(s)\nz = s\n", ["z"], "fan", elements, foreach="s")
            [d] = await submit(engine, "d = 1\n", ["d"], "d", after=["fan"])
            assert sorted(d.deps) == sorted(t.id for t in fan)
            [d, *fan] = await settle(engine, [d, *fan])
            assert d.started >= max(t.finished for t in fan)

    run(scenario)


def test_a_dependent_of_an_uncached_upstream_is_not_served_a_stale_result(tmp_path: Path) -> None:
    source = tmp_path / "value.txt"

    async def scenario() -> None:
        async with running(tmp_path) as engine:
            for value in (1, 2):
                source.write_text(str(value))
                [a] = await submit(engine, f"a = int(open({str(source)!r}).read())\n", ["a"], "a", cache=False)
                [d] = await submit(engine, "d = a * 10\n", ["d"], "d", cache=True, refs={"a": [a.id, "a"]})
                [d] = await settle(engine, [d])
                assert (await result(engine, d.id))["d"] == value * 10

    run(scenario)


def test_a_task_the_store_could_not_take_never_runs(tmp_path: Path) -> None:
    """Submission is atomic: a task is in the store before anything can run it."""
    marker = tmp_path / "ran"

    async def scenario() -> None:
        async with running(tmp_path) as engine:
            real = engine.store.insert_tasks

            def refuse(*args: Any, **kwargs: Any) -> None:
                raise StoreError("the disk is full")

            engine.store.insert_tasks = refuse  # type: ignore[method-assign]
            with pytest.raises(StoreError):
                await submit(engine, f"open({str(marker)!r}, 'w').write('x')\nghost = 1\n", ["ghost"], "ghost")
            engine.store.insert_tasks = real  # type: ignore[method-assign]
            [after] = await submit(engine, "fine = 1\n", ["fine"], "fine")  # the next hand-over
            [after] = await settle(engine, [after])
            assert after.state is State.COMPLETED
            assert not marker.exists(), "a task the store refused ran with the next submission"
            assert [t.name for t in engine.tasks()] == ["fine"]

    run(scenario)
