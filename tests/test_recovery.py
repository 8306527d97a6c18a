"""Nothing submitted is lost or run twice when the server is killed, or when a kernel restarts."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from servers import JupyterServer


@pytest.fixture
def one_worker_server(tmp_path: Path):
    server = JupyterServer(tmp_path / "server", hetflow={"executors": {"local": {"kind": "local", "workers": 1}}})
    yield server
    server.stop()


def runs(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def wait_for(predicate, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_server_killed_mid_task_both_tasks_finish_once_and_the_kernel_gets_its_result(
    one_worker_server: JupyterServer, tmp_path: Path
) -> None:
    server = one_worker_server
    sleeper_runs, queued_runs = tmp_path / "sleeper.txt", tmp_path / "queued.txt"
    # kernels outside the server (a kernel the server started dies with it: ipykernel's parent poller)
    first, second = server.outside_kernel(tmp_path / "k1"), server.outside_kernel(tmp_path / "k2")
    try:
        assert "Jupyter server at" in first.run("%remote status").check().stdout
        sleeping = first.start(
            f"%%remote name=sleeper\nimport time\nopen({str(sleeper_runs)!r}, 'a').write('run\\n')\n"
            "for i in range(6):\n    print('tick', i, flush=True)\n    time.sleep(0.5)\nslept = 'yes'\n"
        )
        wait_for(lambda: runs(sleeper_runs) == 1)
        queued = second.start(f"%%remote name=queued\nopen({str(queued_runs)!r}, 'a').write('run\\n')\nq = 2\n")
        wait_for(lambda: server.json("GET", "hetflow/api/tasks?state=queued")["tasks"] != [])
        old_pid = server.proc.pid
        server.kill()
        assert server.runtime.joinpath(f"hetflow-{old_pid}.json").exists()  # stale: the kernels must skip it
        time.sleep(0.5)
        server.start()
        sleeper_out = first.collect(*sleeping, timeout=60).check()
        second.collect(*queued, timeout=60).check()
        assert first.value("slept") == "yes" and second.value("q") == 2
        assert runs(sleeper_runs) == 1, "the sleeping task ran again"
        assert runs(queued_runs) == 1, "the queued task ran twice"
        ticks = [line for line in sleeper_out.stdout.splitlines() if line.startswith("tick")]
        assert ticks == [f"tick {i}" for i in range(6)], sleeper_out.stdout
        history = server.json("GET", "hetflow/api/tasks/sleeper")["events"]
        assert any("re-attaching" in (e["message"] or "") for e in history)
        assert [e["state"] for e in history][-1] == "completed"
    finally:
        first.shutdown()
        second.shutdown()


def test_task_whose_worker_died_with_the_server_is_run_again_once(
    one_worker_server: JupyterServer, tmp_path: Path
) -> None:
    server = one_worker_server
    marker = tmp_path / "lost.txt"
    kernel = server.outside_kernel(tmp_path / "k")
    try:
        lost = kernel.start(
            f"%%remote name=lost\nimport time\nopen({str(marker)!r}, 'a').write('run\\n')\ntime.sleep(1.5)\nfound = 1\n"
        )
        wait_for(lambda: runs(marker) == 1)
        worker = server.json("GET", "hetflow/api/tasks/lost")["task"]["handle"]["pid"]
        server.kill()
        __import__("os").kill(worker, 9)  # the machine lost the worker too
        server.start()
        kernel.collect(*lost, timeout=60).check()
        assert runs(marker) == 2
        history = server.json("GET", "hetflow/api/tasks/lost")["events"]
        assert sum("re-running once" in (e["message"] or "") for e in history) == 1
    finally:
        kernel.shutdown()


def test_after_a_kernel_restart_results_are_there_and_the_cache_serves_the_cell(tmp_path: Path) -> None:
    server = JupyterServer(tmp_path / "server")
    kernel = server.notebook_kernel("restart.ipynb")
    marker = tmp_path / "restart.txt"
    cell = f"%%remote name=kept\nopen({str(marker)!r}, 'a').write('run\\n')\nkept = [1, 2, 3]\n"
    try:
        kernel.run(cell).check()
        kernel_id = server.json("GET", "api/sessions")[0]["kernel"]["id"]
        server.json("POST", f"api/kernels/{kernel_id}/restart")
        kernel.client.wait_for_ready(timeout=60)
        kernel.run("%load_ext hetflow").check()
        assert kernel.run("'kept' in globals()").check().result == "False"
        kernel.run("fetched = %remote result kept").check()
        assert kernel.value("fetched") == {"kept": [1, 2, 3]}
        kernel.run(cell).check()
        assert kernel.value("kept") == [1, 2, 3]
        assert runs(marker) == 1, "the unchanged cell ran again instead of coming from the cache"
    finally:
        kernel.shutdown()
        server.stop()


def test_what_a_worker_writes_while_no_engine_listens_is_masked_in_the_spool(
    one_worker_server: JupyterServer, tmp_path: Path
) -> None:
    """The worker kept a task's output and error for the next engine in spool/local, unmasked: a credential's value
    the task printed after the server died sat there in clear until an engine came back."""
    server = one_worker_server
    secret, go, printed = "tok-" + "9f3c1e77" * 4, tmp_path / "go", tmp_path / "printed"
    (tmp_path / "secret.txt").write_text(secret)
    server.json("PUT", "hetflow/api/credentials/api-token", {"kind": "token", "fields": {"token": secret}})
    kernel = server.outside_kernel(tmp_path / "k")
    try:
        kernel.run(
            f"%%remote name=leaky wait=false\nimport os, time\nwhile not os.path.exists({str(go)!r}):\n"
            f"    time.sleep(0.05)\ns = open({str(tmp_path / 'secret.txt')!r}).read()\n"
            "print('the token is', s[:10], end='', flush=True)\ntime.sleep(0.2)\nprint(s[10:], flush=True)\n"
            f"open({str(printed)!r}, 'w').close()\nraise ValueError('bad token ' + s)\n"
        ).check()
        wait_for(lambda: server.json("GET", "hetflow/api/tasks/leaky")["task"]["state"] == "running")
        spool = server.store / "spool" / "local"
        server.kill()
        go.touch()
        wait_for(lambda: printed.exists())
        task_id = next(p.stem for p in spool.glob("*.log"))
        wait_for(lambda: any(task_id.encode() in p.read_bytes() for p in spool.glob("worker-*.journal")))
        kept = {p.name: p.read_bytes() for p in spool.iterdir() if p.is_file()}
        assert not [name for name, data in kept.items() if secret.encode() in data], "a secret in the spool"
        assert b"********" in kept[f"{task_id}.log"], kept[f"{task_id}.log"]
        server.start()
        wait_for(lambda: server.json("GET", "hetflow/api/tasks/leaky")["task"]["state"] == "failed")
        task = server.json("GET", "hetflow/api/tasks/leaky")["task"]
        assert "bad token ********" in task["error"]["message"] and secret not in json.dumps(task)
    finally:
        kernel.shutdown()
