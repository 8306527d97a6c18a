"""Retention: the store forgets old ended tasks with their events, logs and the blobs no task left names, never a
pinned task, an unfinished one, or one that a task kept waits for; and the oldest go first when it is too big."""

from __future__ import annotations

import time

from hetflow_server.models import State, Task
from hetflow_server.retention import forget, store_bytes
from hetflow_server.store import SMALL_BLOB, Store

DAY = 86400.0


def _task(store: Store, task_id: str, state: State, age_days: float, **fields) -> Task:
    finished = time.time() - age_days * DAY
    task = Task(task_id, task_id, state, "local", {}, "", {}, [], created=finished - 1, finished=finished, **fields)
    store.insert_tasks([(task, [State.PENDING, state], "done")])
    store.log_path(task_id).write_text(f"log of {task_id}\n")
    return task


def test_old_ended_tasks_go_with_their_events_logs_and_unshared_blobs_and_the_rest_stays(tmp_path) -> None:
    store = Store(tmp_path)
    shared = store.put_blob(b"a payload two tasks share")
    own = store.put_blob(b"r" * (SMALL_BLOB + 1))  # a file
    element = store.put_blob(b"an element only the old task had")
    _task(store, "old", State.COMPLETED, 40, payload_hash=shared, result_hash=own, bound={"k": element})
    _task(store, "oldfail", State.FAILED, 35)
    _task(store, "pinned", State.COMPLETED, 40, pinned=True)
    _task(store, "upstream", State.COMPLETED, 40)
    _task(store, "chain", State.COMPLETED, 38, deps=["upstream"])  # old, but waited for by a kept task
    _task(store, "recent", State.COMPLETED, 1, payload_hash=shared, deps=["chain"])
    _task(store, "stuck", State.RUNNING, 40)
    before = store_bytes(store)
    gone = forget(store, 30, 0)
    left = sorted(t.id for t in store.find_tasks())
    assert left == ["chain", "pinned", "recent", "stuck", "upstream"], left
    assert (gone.tasks, gone.blobs) == (2, 2), gone
    assert store.has_blob(shared) and not store.has_blob(own) and not store.has_blob(element)
    assert not store.blob_path(own).exists(), "the old task's result file was left"
    assert not store.log_path("old").exists() and store.log_path("recent").exists()
    assert store.events("old") == [] and store.events("recent")
    assert before - store_bytes(store) == gone.bytes and gone.bytes > SMALL_BLOB


def test_over_keep_bytes_the_oldest_ended_tasks_go_first_until_it_fits(tmp_path) -> None:
    store = Store(tmp_path)
    for n in range(20):  # each task's result a 100 KB file, the oldest first
        result = store.put_blob(bytes([n]) * 100_000)
        _task(store, f"t{n:02d}", State.COMPLETED, 20 - n, result_hash=result)
    gone = forget(store, None, 1_000_000)
    left = sorted(t.id for t in store.find_tasks())
    assert store_bytes(store) <= 1_000_000 and gone.tasks == 20 - len(left)
    assert left == [f"t{n:02d}" for n in range(20 - len(left), 20)], "not the oldest that went"
    assert len(left) >= 8  # not more than needed: steps of a tenth of the ended tasks


def test_remote_clean_forgets_ended_tasks_through_the_server_but_a_pinned_one(tmp_path) -> None:
    from servers import JupyterServer

    server = JupyterServer(tmp_path / "server")
    kernel = server.outside_kernel(tmp_path / "k")
    try:
        kernel.run("%%remote name=kept\nkept = list(range(100_000))\n").check()  # a result in a blob file
        kernel.run("%%remote name=dropped\ndropped = [str(i) for i in range(100_000)]\nprint('a log')\n").check()
        assert "is pinned" in kernel.run("%remote pin kept").check().stdout
        dropped = server.json("GET", "hetflow/api/tasks/dropped")["task"]
        files = {p.name for p in (server.store / "blobs").rglob("*") if p.is_file()}
        assert dropped["result_hash"] in files and (server.store / "logs" / f"{dropped['id']}.log").exists()
        out = kernel.run("%remote clean 0").check().stdout
        assert "forgot 1 ended task(s)" in out, out
        names = [t["name"] for t in server.json("GET", "hetflow/api/tasks")["tasks"]]
        assert names == ["kept"], names
        files = {p.name for p in (server.store / "blobs").rglob("*") if p.is_file()}
        assert dropped["result_hash"] not in files, "the forgotten task's result is still in the store"
        assert not (server.store / "logs" / f"{dropped['id']}.log").exists()
        assert kernel.value("len(get_ipython().run_line_magic('remote', 'result kept')['kept'])") == 100_000
        status, _, data = server.request("POST", "hetflow/api/clean", body=b'{"keep_days": -1}')
        assert status == 400 and b"keep_days" in data
    finally:
        kernel.shutdown()
        server.stop()
