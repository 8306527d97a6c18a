"""Workflows on a real Dask LocalCluster through a real kernel: the acceptance cases of the dask executor."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kernels import Kernel
from workflows import diamond_with_failing_join_input

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kernel]:
    config = {"default_executor": "dask", "executors": {"dask": {"kind": "dask", "workers": 2}}}
    k = Kernel.local(tmp_path_factory.mktemp("dask"), config=config)
    yield k
    k.shutdown()


def test_chain_on_dask_keeps_the_middle_result_on_the_cluster(kernel: Kernel, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    log = f"open({str(runs)!r}, 'a').write"
    kernel.run(f"%%remote wait=false\nimport time\ntime.sleep(0.5)\n{log}('a\\n')\nda_a = list(range(1000))\n").check()
    kernel.run(f"%%remote wait=false\n{log}('b\\n')\nda_b = [v * 2 for v in da_a]\n").check()
    kernel.run(f"%%remote wait=false\n{log}('c\\n')\nda_c = sum(da_b)\n").check()
    assert kernel.value("da_c") == 999 * 1000  # reads only da_c: only its result comes over
    assert runs.read_text().split() == ["a", "b", "c"]
    b = kernel.value("__import__('hetflow.client').client.get_client().find('da_b').to_json()")
    store = "__import__('hetflow.client').client.get_client().engine.store"
    assert kernel.value(f"{store}.has_blob({b['result_hash']!r})") is False, "the middle result left the cluster"
    shown = kernel.value("da_b.__repr__()")  # finished, not read yet: still a future, its value on the cluster
    assert shown.startswith("<hetflow future 'da_b'") and "completed" in shown, shown
    assert kernel.value("len(da_b)") == 1000  # read: fetched now, hash checked
    assert kernel.value(f"{store}.has_blob({b['result_hash']!r})") is True


def test_a_reduce_over_a_foreach_on_dask_reads_the_elements_on_the_cluster(kernel: Kernel) -> None:
    kernel.run("%%remote foreach=i:range(20) wait=false\ndr_part = [i] * 100\n").check()
    kernel.run("%%remote wait=false\ndr_total = sum(sum(p) for p in dr_part)\n").check()
    assert kernel.value("dr_total") == 100 * sum(range(20))
    hashes = kernel.value(
        "[t.result_hash for t in __import__('hetflow.client').client.get_client().tasks() if t.name == 'dr_part']"
    )
    store = "__import__('hetflow.client').client.get_client().engine.store"
    assert len(hashes) == 20 and not any(kernel.value(f"[{store}.has_blob(h) for h in {hashes!r}]"))


def test_diamond_on_dask(kernel: Kernel) -> None:
    kernel.run("%%remote wait=false\ndd_a = 3\n").check()
    kernel.run("%%remote wait=false\ndd_b = dd_a + 1\n").check()
    kernel.run("%%remote wait=false\ndd_c = dd_a * 2\n").check()
    kernel.run("%%remote wait=false\ndd_d = dd_b * dd_c\n").check()
    assert kernel.value("dd_d") == 24
    executors = kernel.run("%remote executors").check().stdout
    assert "scheduler=tcp://127.0.0.1:" in executors and "workers=2" in executors  # the LocalCluster is on loopback


def test_failing_task_cancels_the_join_and_rerun_runs_only_it_and_the_join(kernel: Kernel, tmp_path: Path) -> None:
    runs, fixed = tmp_path / "runs", tmp_path / "fixed"
    diamond_with_failing_join_input(kernel, "df", runs, fixed)
    out = kernel.run("df_d")
    assert not out.ok and "upstream df_b failed" in out.traceback
    fixed.touch()
    assert "re-running 2 task(s): df_b, df_d" in kernel.run("%remote rerun df_b").check().stdout
    assert kernel.value("df_d") == 5
    assert sorted(runs.read_text().split()) == ["A", "B", "B", "C", "D"]


def test_foreach_of_100_with_3_failing_reruns_3_and_is_packed(kernel: Kernel, tmp_path: Path) -> None:
    runs, fixed = tmp_path / "runs", tmp_path / "fixed"
    kernel.run(
        "%%remote foreach=i:range(100) wait=false name=dsq\nimport os\n"
        f"open({str(runs)!r}, 'a').write(f'{{i}}\\n')\n"
        f"if i in (3, 50, 97) and not os.path.exists({str(fixed)!r}):\n    raise ValueError(i)\n"
        "dsq = i * i\n"
    ).check()
    out = kernel.run("dsq")
    assert not out.ok and "3 of 100 elements did not complete" in out.traceback
    fixed.touch()
    assert "re-running 3 task(s)" in kernel.run("%remote rerun dsq").check().stdout
    assert kernel.value("dsq") == [i * i for i in range(100)]
    assert len(runs.read_text().split()) == 103
    keys = kernel.value(
        "len({t.handle['dask_key'] for t in __import__('hetflow.client').client.get_client().tasks() "
        "if t.name == 'dsq' and t.handle})"
    )
    assert 1 <= keys < 50, f"100 elements went out as {keys} Dask tasks"


def test_a_killed_worker_is_retried(kernel: Kernel, tmp_path: Path) -> None:
    marker = tmp_path / "killed-once"
    kernel.run(
        "%%remote retries=1 name=dkill\nimport os, signal\n"
        f"if not os.path.exists({str(marker)!r}):\n    open({str(marker)!r}, 'w').close()\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\nsurvivor = os.getpid()\n"
    ).check()
    task = kernel.value("__import__('hetflow.client').client.get_client().find('dkill').to_json()")
    assert task["state"] == "completed" and task["attempts"] == 2


def wait_for_file(path: Path, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_cancel_stops_running_python_code_on_dask_and_frees_its_worker(kernel: Kernel, tmp_path: Path) -> None:
    started, marker = tmp_path / "started", tmp_path / "ran-on"
    kernel.run(
        f"%%remote wait=false name=dspin\nimport time\nopen({str(started)!r}, 'w').close()\nend = time.time() + 8\n"
        f"while time.time() < end:\n    pass\nopen({str(marker)!r}, 'w').close()\ndspin = 1\n"
    ).check()
    wait_for_file(started)
    out = kernel.run("%remote cancel dspin").check()
    assert "cancelled" in out.stdout and out.duration < 2.0, (out.stdout, out.duration)
    failed = kernel.run("dspin")
    assert not failed.ok and "cancelled by the user" in failed.traceback and "stops when" not in failed.traceback
    quick = [kernel.run(f"%%remote name=dq{n}\ndq{n} = {n}\n").check().duration for n in range(3)]
    assert max(quick) < 3.0, quick  # the worker's thread is free again, not held for 8 s
    time.sleep(8.5)
    assert not marker.exists(), "the cancelled task's code ran on"


def test_timeout_stops_a_sleeping_task_on_dask_and_says_when(kernel: Kernel, tmp_path: Path) -> None:
    starts, marker = tmp_path / "starts", tmp_path / "ran-on"
    out = kernel.run(
        f"%%remote timeout=1 retries=1 name=dnap\nimport time\nopen({str(starts)!r}, 'a').write('s\\n')\n"
        f"time.sleep(5)\nopen({str(marker)!r}, 'a').write('x\\n')\ndnap = 1\n"
    )
    assert not out.ok and "ran longer than timeout=1 s and was stopped" in out.traceback, out.traceback
    assert "inside a call that does not return to Python" in out.traceback, out.traceback  # a sleep: said, not hidden
    time.sleep(5.5)  # past the end of the last attempt's sleep
    assert starts.read_text().split() == ["s", "s"], "both attempts ran"
    assert not marker.exists(), "a timed-out attempt's code ran on after its sleep"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_unreachable_scheduler_is_a_clear_error(tmp_path: Path) -> None:
    address = f"tcp://127.0.0.1:{closed_port()}"
    config = {"executors": {"far": {"kind": "dask", "address": address, "connect_timeout": 2}}}
    k = Kernel.local(tmp_path, config=config)
    try:
        start = time.monotonic()
        out = k.run("%%remote executor=far\nx_far = 1\n")
        assert not out.ok and f"cannot reach the Dask scheduler at {address} within 2 s" in out.traceback
        assert time.monotonic() - start < 15
    finally:
        k.shutdown()


def test_a_scheduler_that_goes_away_fails_its_running_task_clearly(tmp_path: Path) -> None:
    from distributed import LocalCluster

    cluster = LocalCluster(n_workers=1, threads_per_worker=1, host="127.0.0.1", dashboard_address="127.0.0.1:0")
    config = {"executors": {"own": {"kind": "dask", "address": cluster.scheduler_address, "connect_timeout": 2}}}
    k = Kernel.local(tmp_path, config=config)
    try:
        k.run("%%remote executor=own wait=false\nimport time\ntime.sleep(60)\ngone = 1\n").check()
        time.sleep(2.0)
        cluster.close()
        out = k.run("gone", timeout=60)
        assert not out.ok and "DaskSchedulerGone" in out.traceback and cluster.scheduler_address in out.traceback
    finally:
        k.shutdown()
        cluster.close()
