"""The engine in a real Jupyter server: kernels it starts find it, stream through it, stay apart by notebook."""

from __future__ import annotations

import json
import time
from pathlib import Path

from servers import JupyterServer


def test_connection_file_is_private_and_points_at_the_api(server: JupyterServer) -> None:
    assert server.connection_path.stat().st_mode & 0o777 == 0o600
    info = server.connection
    assert info["url"] == f"http://127.0.0.1:{server.port}{server.base_url}hetflow/api/"
    assert info["pid"] == server.proc.pid and len(info["token"]) >= 32


def test_kernel_started_by_the_server_uses_its_engine_and_streams_logs(server: JupyterServer) -> None:
    kernel = server.notebook_kernel("analysis/first.ipynb")
    try:
        status = kernel.run("%remote status").check().stdout
        assert f"Jupyter server at http://127.0.0.1:{server.port}{server.base_url}hetflow/api/" in status
        assert "JPY_PARENT_PID" in status
        kernel.run("base = 20").check()
        out = kernel.run(
            "%%remote name=streamed\nimport time\nfor i in range(4):\n    print('step', i, flush=True)\n"
            "    time.sleep(0.4)\nresult = base + 1\n",
            cell_id="cell-abc",
        ).check()
        steps = [o.time for o in out.outputs if o.msg_type == "stream" and "step" in o.content["text"]]
        assert len(steps) >= 3 and out.outputs[-1].time - steps[0] > 1.0, "logs arrived only at the end"
        assert kernel.value("result") == 21
        tasks = server.json("GET", "hetflow/api/tasks?notebook=analysis/first.ipynb")["tasks"]
        task = next(t for t in tasks if t["name"] == "streamed")
        assert task["cell_id"] == "cell-abc" and task["state"] == "completed"
        detail = server.json("GET", f"hetflow/api/tasks/{task['id']}")
        assert [e["state"] for e in detail["events"]] == ["pending", "queued", "running", "completed"]
        status, headers, log = server.request("GET", f"hetflow/api/tasks/{task['id']}/logs?offset=7")
        assert status == 200 and log == b"step 1\nstep 2\nstep 3\n"
        assert headers["X-Hetflow-Next-Offset"] == str(7 + len(log))
        failed = kernel.run("%%remote name=broken\nx = 1\nraise ValueError('nope')\n")
        assert "line 3" in failed.traceback and "ValueError: nope" in failed.traceback
    finally:
        kernel.shutdown()


def test_two_notebooks_submitting_together_stay_separate(server: JupyterServer) -> None:
    first, second = server.notebook_kernel("one.ipynb"), server.notebook_kernel("two.ipynb")
    try:
        running = [
            (k, *k.start(f"%%remote name=together\nimport time\ntime.sleep(0.5)\nwho = {n!r}\n", cell_id=f"cell-{n}"))
            for k, n in ((first, "one"), (second, "two"))
        ]
        for kernel, msg_id, execution in running:
            kernel.collect(msg_id, execution).check()
        assert first.value("who") == "one" and second.value("who") == "two"
        for notebook in ("one", "two"):
            tasks = server.json("GET", f"hetflow/api/tasks?notebook={notebook}.ipynb")["tasks"]
            assert [(t["name"], t["cell_id"]) for t in tasks] == [("together", f"cell-{notebook}")]
        graph = server.json("GET", "hetflow/api/graph?notebook=one.ipynb")
        assert [n["notebook"] for n in graph["nodes"]] == ["one.ipynb"] and graph["edges"] == []
    finally:
        first.shutdown()
        second.shutdown()


def test_api_actions_cancel_rerun_and_retry(server: JupyterServer, tmp_path: Path) -> None:
    kernel = server.notebook_kernel("actions.ipynb")
    runs = tmp_path / "quick-runs"
    try:
        msg_id, execution = kernel.start("%%remote name=slow cache=false\nimport time\ntime.sleep(30)\n")
        task = None
        for _ in range(100):
            tasks = server.json("GET", "hetflow/api/tasks?notebook=actions.ipynb&state=running")["tasks"]
            if tasks:
                task = tasks[0]
                break
            time.sleep(0.1)
        assert task is not None
        cancelled = server.json("POST", f"hetflow/api/tasks/{task['id']}/cancel")["task"]
        assert cancelled["state"] == "cancelled"
        out = kernel.collect(msg_id, execution)
        assert "cancelled" in out.traceback
        kernel.run(f"%%remote name=quick\nopen({str(runs)!r}, 'a').write('run\\n')\nquick = 1").check()
        assert runs.read_text() == "run\n"
        quick = server.json("GET", "hetflow/api/tasks/quick")["task"]
        rerun = server.json("POST", f"hetflow/api/tasks/{quick['id']}/rerun")["task"]
        assert rerun["id"] == quick["id"]
        deadline = time.monotonic() + 30
        while (again := server.json("GET", "hetflow/api/tasks/quick")["task"])["state"] != "completed" or not (
            again["finished"] > quick["finished"]
        ):
            assert time.monotonic() < deadline, f"the rerun did not complete: {again['state']}"
            time.sleep(0.05)
        assert runs.read_text() == "run\nrun\n", "the rerun did not run the task's code again (exactly once)"
        status, _, body = server.request("POST", f"hetflow/api/tasks/{quick['id']}/retry")
        assert status == 400 and "only a failed or cancelled task" in json.loads(body)["message"]
        status, _, body = server.request("GET", "hetflow/api/tasks/nosuchtask")
        assert status == 404
        spec = {"code": "x = 1", "inputs": {}, "outputs": ["x"], "name": "typed", "timeout": "60"}
        status, _, body = server.request(
            "POST",
            "hetflow/api/tasks",
            auth="engine",
            body=json.dumps(spec).encode() + b"\n",
            headers={"Content-Type": "application/x-hetflow-task"},
        )
        assert status == 400 and "timeout" in json.loads(body)["message"]
        status, _, body = server.request("GET", "hetflow/api/tasks?state=bogus")
        assert status == 400 and "bogus" in json.loads(body)["message"]
        assert server.json("POST", "hetflow/api/executors/local/check")["healthy"] is True
    finally:
        kernel.shutdown()


def test_a_server_on_a_store_dir_that_was_there_makes_it_and_its_files_private(tmp_path: Path) -> None:
    """A store_dir on scratch, made before (0755) with a world-readable database: the server used it as it was."""
    store = tmp_path / "scratch" / "hetflow"
    store.mkdir(parents=True)
    store.chmod(0o755)
    (store / "hetflow.db").touch(mode=0o644)
    server = JupyterServer(tmp_path / "server", hetflow={"store_dir": str(store)})
    try:
        server.json("PUT", "hetflow/api/credentials/key", {"kind": "token", "fields": {"token": "s3cr3t-value"}})
        modes = {p.name: p.stat().st_mode & 0o777 for p in [store, *store.iterdir()] if not p.name.endswith(".tmp")}
        assert modes.pop("hetflow") == 0o700 and set(modes.values()) <= {0o700, 0o600}, modes
        assert {"hetflow.db", "engine.lock", "credentials.json", "blobs", "logs"} <= set(modes)
    finally:
        server.stop()
