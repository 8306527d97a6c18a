"""The blob store of the ssh and slurm kinds (executors/blobs.py, runner.blob_store), here through the `ssh` kind in
login-node mode (local commands, the same runner and files as over SSH; tests/test_slurm.py measures the bytes on a
real SSH link): a large input is written to REMOTE_ROOT/blobs once, however many tasks read it; a tampered blob is
refused, a purged one sent again, and the least recently used go first."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import cloudpickle

from engines import outputs, run, running, settle, submit
from hetflow_server import runner
from hetflow_server.engine import Engine
from hetflow_server.models import State, Task
from hetflow_server.protocol import StoreError, sha256

MB = 1 << 20
READ = "total = len(big) + extra\n"


def host(tmp_path: Path, **settings: object) -> dict[str, dict]:
    root = tmp_path / "remote"
    return {
        "login": {"kind": "ssh", "host": "localhost", "python": sys.executable, "remote_root": str(root), **settings}
    }


def blobs(tmp_path: Path) -> dict[str, os.stat_result]:
    store = tmp_path / "remote" / "blobs"
    return {path.name: path.stat() for path in store.iterdir()} if store.exists() else {}


def blob_of(value: object) -> str:
    return sha256(cloudpickle.dumps(value, protocol=5))


async def reads(engine: Engine, big: bytes, extra: int) -> Task:
    """A cell that reads `big` (a payload input), once it ended."""
    (task,) = await submit(engine, f"extra = {extra}\n{READ}", ["total"], f"reads{extra}", None, {"big": big})
    return (await settle(engine, [task]))[0]


def test_a_large_input_read_by_a_foreach_and_two_later_cells_is_written_to_the_blob_store_once(tmp_path: Path) -> None:
    big = os.urandom(2 * MB)

    async def scenario() -> None:
        async with running(tmp_path, host(tmp_path), "login") as engine:
            elements = [cloudpickle.dumps(n) for n in range(4)]
            fan = await submit(engine, READ, ["total"], "fan", elements, {"big": big}, foreach="extra")
            assert all(t.state is State.COMPLETED for t in await settle(engine, fan))
            first = blobs(tmp_path)
            assert list(first) == [blob_of(big)], "the input did not go to the blob store as one blob"
            for extra in (10, 20):  # two later cells, other code, the same input
                done = await reads(engine, big, extra)
                assert done.state is State.COMPLETED, done.error
                assert outputs(engine.store.get_blob(done.result_hash or ""))["total"] == len(big) + extra
            assert blobs(tmp_path)[blob_of(big)].st_ino == first[blob_of(big)].st_ino, "the blob was sent again"

    run(scenario)


def test_a_tampered_blob_is_refused_and_removed_and_the_next_run_sends_it_again(tmp_path: Path) -> None:
    big = os.urandom(MB)

    async def scenario() -> None:
        async with running(tmp_path, host(tmp_path), "login") as engine:
            assert (await reads(engine, big, 1)).state is State.COMPLETED
            stored = tmp_path / "remote" / "blobs" / blob_of(big)
            stored.write_bytes(stored.read_bytes()[:-1] + b"\0")  # someone else's bytes under the same name
            refused = await reads(engine, big, 2)
            assert refused.state is State.FAILED and refused.error["type"] == "IntegrityError", refused.error
            assert "does not match its hash" in refused.error["message"], refused.error
            assert not stored.exists(), "the tampered blob was left for the next run"
            done = await reads(engine, big, 3)
            assert done.state is State.COMPLETED, done.error
            assert sha256(stored.read_bytes()) == blob_of(big)

    run(scenario)


def test_a_purged_blob_store_is_filled_again_by_the_next_task(tmp_path: Path) -> None:
    big = os.urandom(MB)

    async def scenario() -> None:
        async with running(tmp_path, host(tmp_path), "login") as engine:
            assert (await reads(engine, big, 1)).state is State.COMPLETED
            for path in (tmp_path / "remote" / "blobs").iterdir():  # a scratch purge
                path.unlink()
            (tmp_path / "remote" / "blobs").rmdir()
            done = await reads(engine, big, 2)
            assert done.state is State.COMPLETED, done.error
            assert list(blobs(tmp_path)) == [blob_of(big)]
            assert oct((tmp_path / "remote" / "blobs").stat().st_mode & 0o777) == oct(0o700)

    run(scenario)


def test_beyond_its_limit_the_blob_store_evicts_the_least_recently_used_first(tmp_path: Path) -> None:
    a, b, c = (os.urandom(MB) for _ in range(3))

    async def scenario() -> None:
        async with running(tmp_path, host(tmp_path, blob_limit=int(2.5 * MB)), "login") as engine:
            for n, value in enumerate([a, b, a, c]):  # a used again after b: b is the least recently used
                assert (await reads(engine, value, n)).state is State.COMPLETED
                time.sleep(0.05)  # mtimes apart
            assert set(blobs(tmp_path)) == {blob_of(a), blob_of(c)}
            assert all(stat.st_mode & 0o777 == 0o600 for stat in blobs(tmp_path).values())
            cleaned = await engine.clean("login")
            assert cleaned == {"name": "login", "removed": 2, "bytes": 2 * len(cloudpickle.dumps(a))}
            assert blobs(tmp_path) == {}

    run(scenario)


def test_blobs_of_running_tasks_and_wanted_ones_are_never_evicted_and_stale_ones_are(tmp_path: Path) -> None:
    store = tmp_path / "blobs"
    store.mkdir()
    old = time.time() - 3600
    for name in ("running", "wanted", "stale", "fresh"):
        (store / name).write_bytes(b"x" * 100)
        os.utime(store / name, (old, old) if name != "fresh" else None)
    present, evicted, freed = runner.blob_store(str(store), -1, 60, {"wanted": 100, "absent": 5}, ["running"])
    assert present == ["wanted"] and (evicted, freed) == (1, 100)
    assert sorted(p.name for p in store.iterdir()) == ["fresh", "running", "wanted"]
    present, evicted, _ = runner.blob_store(str(store), 0, -1, {}, ["running"])  # a limit of 0: all but in use
    assert (present, evicted) == ([], 2) and [p.name for p in store.iterdir()] == ["running"]


# --------------------------------------------------------------------------- results kept at the executor

PRODUCE = "import os\nopen({runs!r}, 'a').write('a')\ndata = os.urandom(2 << 20)\n"


def test_a_large_result_stays_at_the_executor_and_the_next_task_there_reads_it_in_place(tmp_path: Path) -> None:
    runs = tmp_path / "runs"

    async def scenario() -> None:
        async with running(tmp_path, host(tmp_path), "login") as engine:
            (a,) = await submit(engine, PRODUCE.format(runs=str(runs)), ["data"], "a")
            (b,) = await submit(engine, "size = len(data)\n", ["size"], "b", refs={"data": [a.id, "data"]})
            a, b = await settle(engine, [a, b])
            assert a.state is State.COMPLETED and b.state is State.COMPLETED, (a.error, b.error)
            assert outputs((await engine.result("b"))[1])["size"] == 2 << 20
            assert not engine.store.has_blob(a.result_hash or ""), "the result came to the engine unasked"
            assert a.result_hash in blobs(tmp_path), "the result is not in the blob store"
            data = outputs((await engine.result("a"))[1])["data"]  # asked for: fetched, checked, stored
            assert len(data) == 2 << 20 and engine.store.has_blob(a.result_hash or "")
        async with running(tmp_path, host(tmp_path), "login") as engine:  # the store knows where it lives
            (c,) = await submit(engine, "head = data[:4]\n", ["head"], "c", refs={"data": [a.id, "data"]})
            (c,) = await settle(engine, [c])
            assert c.state is State.COMPLETED and outputs((await engine.result("c"))[1])["head"] == data[:4]
            assert runs.read_text() == "a"

    run(scenario)


def test_a_purged_kept_result_is_computed_again_before_the_task_that_reads_it(tmp_path: Path) -> None:
    runs = tmp_path / "runs"

    async def scenario() -> None:
        async with running(tmp_path, host(tmp_path), "login") as engine:
            (a,) = await submit(engine, PRODUCE.format(runs=str(runs)), ["data"], "a")
            (a,) = await settle(engine, [a])
            (tmp_path / "remote" / "blobs" / (a.result_hash or "")).unlink()  # a scratch purge
            (b,) = await submit(engine, "size = len(data)\n", ["size"], "b", refs={"data": [a.id, "data"]})
            (b,) = await settle(engine, [b])
            assert b.state is State.COMPLETED, b.error
            assert runs.read_text() == "aa", "the producing task did not run again"
            said = [e["message"] or "" for e in engine.store.events(a.id)]
            assert any("is gone" in m and "running it again" in m for m in said), said
            a = engine.store.get_task(a.id) or a  # computed again: another result (os.urandom)
            (tmp_path / "remote" / "blobs" / (a.result_hash or "")).unlink()  # and again, before the kernel asks
            try:
                await engine.result("a")
            except StoreError as err:
                assert "running again" in str(err)
            else:
                raise AssertionError("a result that is gone was served")
            (a,) = await settle(engine, [engine.scheduler.lookup(a.id) or a])
            assert a.state is State.COMPLETED and runs.read_text() == "aaa"
            assert len(outputs((await engine.result("a"))[1])["data"]) == 2 << 20

    run(scenario)
