"""Cells as a workflow, through a real kernel: wait=false futures, dependencies from data and after=, failure
propagation and re-runs, foreach fan-out. Every task notes each run in a file, so the tests count real runs."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kernels import Kernel
from servers import JupyterServer
from workflows import (
    diamond_with_failing_join_input,
    foreach_with_failing_elements,
    info,
    lines,
    note,
    rerun_reruns_only_the_failed,
)


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kernel]:
    k = Kernel.local(tmp_path_factory.mktemp("workflows"), config={"executors": {"local": {"kind": "local"}}})
    yield k
    k.shutdown()


def test_wait_false_returns_a_future_that_is_swapped_for_its_value(kernel: Kernel, tmp_path: Path) -> None:
    out = kernel.run(f"%%remote wait=false\nimport time\ntime.sleep(1.0)\n{note(tmp_path / 'r', 'f')}fut = 6 * 7\n")
    assert out.check().duration < 0.8, out.duration
    assert "hetflow: fut · local" in str(out.outputs)  # the status line (the name skips the imported module)
    shown = kernel.run("fut.__repr__()").check().result or ""  # the future's own API does not wait
    assert "<hetflow future 'fut': task 'fut'" in shown and ("queued" in shown or "running" in shown), shown
    assert kernel.value("fut.done()") is False
    assert kernel.value("fut.result()") == 42
    assert kernel.value("type(fut).__name__") == "int"  # swapped before this cell ran


def test_a_plain_cell_reading_an_unfinished_future_waits_for_it(kernel: Kernel) -> None:
    kernel.run("%%remote wait=false\nimport time\ntime.sleep(1.0)\nlater = 'ready'\n").check()
    out = kernel.run("waited = later + '!'\nwaited").check()
    assert out.result == "'ready!'"
    assert 0.5 < out.duration < 5, out.duration


def test_a_plain_cell_with_a_future_import_still_waits_for_its_futures(kernel: Kernel) -> None:
    kernel.run("%%remote wait=false\nimport time\ntime.sleep(0.5)\nfut_late = 3\n").check()
    out = kernel.run("from __future__ import annotations\nfut_twice = fut_late * 2\nfut_twice").check()
    assert out.result == "6"


def test_using_a_method_of_an_unfinished_output_waits_for_its_value(kernel: Kernel) -> None:
    kernel.run("%%remote wait=false\nimport time\ntime.sleep(0.5)\nmany = list(range(10))\n").check()
    assert kernel.run("many.count(5)").check().result == "1"


def test_interrupting_a_wait_on_a_future_leaves_the_task_running(kernel: Kernel) -> None:
    kernel.run("%%remote wait=false\nimport time\ntime.sleep(2.5)\nslow = 'done'\n").check()
    msg_id, execution = kernel.start("slow_copy = slow")
    time.sleep(0.7)
    kernel.interrupt()
    out = kernel.collect(msg_id, execution)
    assert not out.ok and "keeps running" in out.traceback
    assert "future" in (kernel.run("slow.__repr__()").check().result or "")
    time.sleep(2.5)
    assert kernel.value("slow") == "done"


def test_chain_of_three_wait_false_cells_runs_in_order(kernel: Kernel, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    start = time.monotonic()
    kernel.run(f"%%remote wait=false\nimport time\ntime.sleep(0.5)\n{note(runs, 'a')}ch_a = 1\n").check()
    kernel.run(f"%%remote wait=false\n{note(runs, 'b')}ch_b = ch_a + 1\n").check()
    kernel.run(f"%%remote wait=false\n{note(runs, 'c')}ch_c = ch_b * 10\n").check()
    assert time.monotonic() - start < 1.5  # three cells returned without waiting for each other
    assert kernel.value("ch_c") == 20
    assert lines(runs) == ["a", "b", "c"]
    b, a = info(kernel, "ch_b"), info(kernel, "ch_a")
    assert b["deps"] == [a["id"]] and b["refs"] == {"ch_a": [a["id"], "ch_a"]}


def test_diamond_runs_each_task_once_and_the_join_last(kernel: Kernel, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    kernel.run(f"%%remote wait=false\nimport time\ntime.sleep(0.3)\n{note(runs, 'A')}dm_a = 2\n").check()
    kernel.run(f"%%remote wait=false\n{note(runs, 'B')}dm_b = dm_a + 1\n").check()
    kernel.run(f"%%remote wait=false\n{note(runs, 'C')}dm_c = dm_a * 10\n").check()
    kernel.run(f"%%remote wait=false\n{note(runs, 'D')}dm_d = dm_b + dm_c\n").check()
    assert kernel.value("dm_d") == 23
    order = lines(runs)
    assert sorted(order) == ["A", "B", "C", "D"] and order[0] == "A" and order[-1] == "D"
    assert len(info(kernel, "dm_d")["deps"]) == 2
    graph = kernel.run("%remote graph").check()
    svg = next(o.content["data"]["image/svg+xml"] for o in graph.outputs if o.msg_type == "execute_result")
    assert all(f">{name}<" in svg for name in ("dm_a", "dm_b", "dm_c", "dm_d")), svg[:500]


def test_failing_task_cancels_its_dependents_and_rerun_runs_only_it_and_them(kernel: Kernel, tmp_path: Path) -> None:
    runs, fixed = tmp_path / "runs", tmp_path / "fixed"
    diamond_with_failing_join_input(kernel, "fp", runs, fixed)
    out = kernel.run("fp_d")
    assert not out.ok and "upstream fp_b failed" in out.traceback, out.traceback
    d = info(kernel, "fp_d")
    assert d["state"] == "cancelled" and d["error"]["message"] == "upstream fp_b failed"
    assert sorted(lines(runs)) == ["A", "B", "C"]  # D never ran

    fixed.touch()
    rerun = kernel.run("%remote rerun fp_b").check().stdout
    assert "re-running 2 task(s): fp_b, fp_d" in rerun, rerun
    assert kernel.value("fp_d") == 5  # the future followed the re-run
    assert sorted(lines(runs)) == ["A", "B", "B", "C", "D"]  # A and C did not run again
    assert info(kernel, "fp_a")["attempts"] == 1


def test_after_orders_tasks_without_data(kernel: Kernel, tmp_path: Path) -> None:
    shared = tmp_path / "shared.txt"
    kernel.run(
        f"%%remote wait=false name=writer\nimport time\ntime.sleep(0.5)\nopen({str(shared)!r}, 'w').write('hello')\n"
    ).check()
    kernel.run(f"%%remote wait=false after=writer\nread_back = open({str(shared)!r}).read()\n").check()
    assert kernel.value("read_back") == "hello"
    assert info(kernel, "read_back")["deps"] == [info(kernel, "writer")["id"]]


def test_after_an_unknown_task_is_a_clear_error(kernel: Kernel) -> None:
    out = kernel.run("%%remote after=nosuchtask\nx_after = 1\n")
    assert not out.ok and "no task has the id or name 'nosuchtask'; %remote status lists them" in out.stderr


def test_foreach_outputs_lists_in_element_order(kernel: Kernel) -> None:
    kernel.run("%%remote 'foreach=v:[3, 1, 2]'\nimport time\ntime.sleep(0.1 * v)\ntripled = 3 * v\nv * 2\n").check()
    assert kernel.value("tripled") == [9, 3, 6]
    assert kernel.value("_") == [6, 2, 4]


def test_foreach_with_failing_elements_keeps_the_others_and_reruns_only_the_failed(
    kernel: Kernel, tmp_path: Path
) -> None:
    runs, fixed = tmp_path / "runs", tmp_path / "fixed"
    cell = foreach_with_failing_elements(kernel, runs, fixed, "", 100, (7, 42, 99))
    rerun_reruns_only_the_failed(kernel, runs, fixed, 100, (7, 42, 99))
    kernel.run(cell.replace(" wait=false", "")).check()  # the whole cell again: every element from the cache
    assert len(lines(runs)) == 103 and kernel.value("squares[99]") == 99 * 99


def test_a_foreach_read_by_a_later_remote_cell_is_a_dependency_not_a_gather(kernel: Kernel) -> None:
    kernel.run("%%remote foreach=i:range(5) wait=false\nimport time\ntime.sleep(0.3)\nparts = i * 10\n").check()
    out = kernel.run("%%remote wait=false\ntotal = sum(parts)\n").check()
    assert out.duration < 0.3, out.duration  # it did not wait for the foreach to gather it here
    assert kernel.value("total") == 100
    total = info(kernel, "total")
    assert len(total["deps"]) == 5 and len(total["refs"]["parts"][0]) == 5


def test_foreach_over_a_bad_expression_is_a_clear_error_before_submission(kernel: Kernel) -> None:
    before = kernel.task_count()
    out = kernel.run("%%remote foreach=i:len(3)\ny_bad = i\n")
    assert not out.ok and "foreach=i:len(3) could not be iterated: TypeError" in out.stderr
    out = kernel.run("%%remote foreach=i\ny_bad = i\n")
    assert not out.ok and "NAME:EXPRESSION" in out.stderr
    assert kernel.task_count() == before


def test_workflow_through_a_jupyter_server(tmp_path: Path) -> None:
    """The same through the server's engine: futures followed over the event socket, a foreach's results in one
    request, a re-run from the REST API (as the sidebar's Re-run button does)."""
    server = JupyterServer(tmp_path / "server")
    kernel = server.notebook_kernel("flow.ipynb")
    try:
        fixed = tmp_path / "fixed"
        kernel.run("%%remote wait=false\nimport time\ntime.sleep(0.3)\nsv_a = 5\n").check()
        kernel.run(
            f"%%remote wait=false\nimport os\nif not os.path.exists({str(fixed)!r}):\n    raise ValueError('not yet')\n"
            "sv_b = sv_a * 2\n"
        ).check()
        kernel.run("%%remote wait=false foreach=k:range(10)\nsv_c = sv_b + k\n").check()
        out = kernel.run("sv_c")
        assert not out.ok and "upstream sv_b failed" in out.traceback, out.traceback
        fixed.touch()
        b = server.json("GET", "hetflow/api/tasks/sv_b")["task"]
        rerun = server.json("POST", f"hetflow/api/tasks/{b['id']}/rerun")
        assert rerun["task"]["id"] == b["id"] and len(rerun["tasks"]) == 11  # sv_b and the 10 elements
        assert kernel.value("sv_c") == [10 + k for k in range(10)]
        status, _, body = server.request("GET", f"hetflow/api/tasks/{rerun['tasks'][1]['id']}/results")
        index = json.loads(body.partition(b"\n")[0])
        assert status == 200 and [e["element"] for e in index] == list(range(10))
        assert all(e["state"] == "completed" and e["size"] > 0 for e in index)
    finally:
        kernel.shutdown()
        server.stop()
