"""The store: content-addressed blobs checked on read, one engine at a time, older stores upgraded in place."""

from __future__ import annotations

import os
import sqlite3
import stat

import pytest

from hetflow_server.models import State, Task
from hetflow_server.protocol import StoreError
from hetflow_server.store import SMALL_BLOB, Store, StoreLocked, StoreUnsafe


def test_a_blob_that_no_longer_matches_its_hash_is_refused(tmp_path) -> None:
    store = Store(tmp_path)
    small, large = b"result bytes", b"x" * (SMALL_BLOB + 1)
    digests = [store.put_blob(small), store.put_blob(large)]
    assert [store.get_blob(d) for d in digests] == [small, large]
    assert store.blob_file(digests[0]) is None and store.blob_file(digests[1]) is not None  # a row, and a file
    store.db.execute("UPDATE blobs SET data = ? WHERE digest = ?", (b"tampered", digests[0]))
    store.blob_path(digests[1]).write_bytes(b"tampered")
    for digest in digests:
        with pytest.raises(StoreError, match="does not match its hash"):
            store.get_blob(digest)


def test_a_small_blob_is_a_row_and_a_large_one_a_file(tmp_path) -> None:
    store = Store(tmp_path / "store")
    for data in (b"s" * 10, b"l" * (SMALL_BLOB + 1)):
        digest = store.put_blob(data)
        assert store.get_blob(digest) == data and store.has_blob(digest)
        assert (store.blob_file(digest) is None) == (len(data) <= SMALL_BLOB)
    assert not store.has_blob("0" * 64)


def test_a_second_engine_cannot_take_a_store_in_use(tmp_path) -> None:
    first = Store(tmp_path)
    first.acquire()
    with pytest.raises(StoreLocked, match=r"in use by pid \d+"):
        Store(tmp_path).acquire()
    first.close()
    Store(tmp_path).acquire()


def test_a_store_from_an_older_version_gains_new_columns_and_keeps_its_tasks(tmp_path) -> None:
    with sqlite3.connect(tmp_path / "hetflow.db") as db:
        db.execute(
            "CREATE TABLE tasks (id TEXT PRIMARY KEY, name, state, executor, options, code, inputs, outputs, "
            "notebook, cell_id, retries, timeout, attempts, cache_key, payload_hash, result_hash, error, handle, "
            "created, started, finished)"
        )
        db.execute(
            "INSERT INTO tasks VALUES ('old1', 'fit', 'completed', 'local', '{}', 'x = 1', '{}', '[\"x\"]', NULL, "
            "NULL, 0, NULL, 1, 'key', 'p', 'r', NULL, NULL, 1.0, 1.0, 2.0)"
        )
    task = Store(tmp_path).get_task("old1")
    assert isinstance(task, Task)
    assert task.state is State.COMPLETED and task.deps == [] and task.restarts == 0 and task.outputs == ["x"]


def test_a_store_dir_that_was_there_is_made_private_with_its_files(tmp_path) -> None:
    root = tmp_path / "scratch"
    (root / "logs").mkdir(parents=True, mode=0o755)
    (root / "hetflow.db").touch(mode=0o644)
    (root / "hetflow.db-wal").touch(mode=0o644)
    (root / "engine.lock").touch(mode=0o666)
    root.chmod(0o755)
    store = Store(root)
    store.acquire()
    store.put_blob(b"x" * (SMALL_BLOB + 1))
    modes = {p.relative_to(root).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in [root, *root.iterdir()]}
    assert modes == {
        ".": 0o700,
        "blobs": 0o700,
        "logs": 0o700,
        "spool": 0o700,
        "hetflow.db": 0o600,
        "hetflow.db-wal": 0o600,
        "hetflow.db-shm": 0o600,
        "engine.lock": 0o600,
    }


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory to another user needs root")
def test_a_store_dir_of_another_user_is_refused_and_left_as_it_was(tmp_path) -> None:
    root = tmp_path / "theirs"
    root.mkdir()
    root.chmod(0o775)
    os.chown(root, 65534, 65534)
    with pytest.raises(StoreUnsafe, match=r"theirs belongs to uid 65534, not to this user .*c\.Hetflow\.store_dir"):
        Store(root)
    assert list(root.iterdir()) == [] and stat.S_IMODE(root.stat().st_mode) == 0o775


def _task(task_id: str, deps: list[str], created: float) -> Task:
    return Task(task_id, task_id, State.PENDING, "local", {}, "", {}, [], deps=deps, created=created)


def test_dependents_come_from_an_index_also_in_a_store_from_before_it(tmp_path) -> None:
    store = Store(tmp_path)
    tasks = [_task("up", [], 1.0), _task("a", ["up"], 2.0), _task("b", ["up", "other"], 3.0), _task("c", [], 4.0)]
    store.insert_tasks([(t, [State.PENDING], None) for t in tasks])
    assert [t.id for t in store.dependents("up")] == ["a", "b"]
    assert [t.id for t in store.dependents("other")] == ["b"] and store.dependents("a") == []
    ran: list[str] = []
    store.db.set_trace_callback(ran.append)
    store.dependents("up")
    store.db.set_trace_callback(None)
    plan = " ".join(str(row[-1]) for sql in ran for row in store.db.execute(f"EXPLAIN QUERY PLAN {sql}"))
    assert "SCAN tasks" not in plan and "task_deps" in plan, plan  # a lookup, not a pass over every task
    # a store from before the index: it is built from the tasks' deps when the store is opened
    store.db.execute("DROP TABLE task_deps")
    store.close()
    assert [t.id for t in Store(tmp_path).dependents("up")] == ["a", "b"]
