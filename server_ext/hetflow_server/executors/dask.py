"""`dask`: tasks on a Dask cluster, through an asynchronous `distributed.Client` on the engine's own event loop.

The cluster is a configured scheduler address, or a `LocalCluster` started (on loopback) at first use. A batch of
ready tasks goes out as a few Dask tasks, each running a pack of them in one go (`runner.run_pack`): thousands of
small tasks cost a few round trips. Results stay on the cluster: the engine learns their hashes, a downstream task
on this executor gets them worker to worker, and their bytes come over only when someone asks (`fetch_results`).

Workers report `started` and log lines through a Dask event topic. Hetflow's `retries` decide what happens after a
failure: the LocalCluster it starts has `allowed-failures` 0, so a killed worker fails its pack at once (a
scheduler of your own applies its own `distributed.scheduler.allowed-failures` first).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import pickle
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cloudpickle
from traitlets import Bool, Float, Int, Unicode

from .. import runner
from ..shipping import Source, envelope
from .base import Executor, Job, KeptResult

log = logging.getLogger(__name__)

# The runner's functions (and the classes they use) are pickled by value wherever cloudpickle pickles them here:
# a scheduler in this process (a LocalCluster) re-pickles them for its workers.
cloudpickle.register_pickle_by_value(runner)
MAX_PACK = 256
RELEASE_IDLE = 0.5


class _ByValue:
    """A runner function that reaches the scheduler and workers by value, so that they need no hetflow installed.
    Registering the runner with cloudpickle is not enough: Dask pickles a task graph with plain pickle first, which
    names a function by its module. This one unpickles as the function itself, rebuilt from its code."""

    def __init__(self, function: Callable[..., Any]):
        self.function = function
        functools.update_wrapper(self, function)

    def __call__(self, *args: Any) -> Any:
        return self.function(*args)

    def __reduce__(self) -> tuple[Callable[[bytes], Any], tuple[bytes]]:
        return pickle.loads, (_by_value(self.function),)


@functools.cache
def _by_value(function: Callable[..., Any]) -> bytes:
    return cloudpickle.dumps(function, protocol=5)


RUN_PACK, WITHOUT_RESULTS, PICK_RESULTS, STOP_TASK = (
    _ByValue(f) for f in (runner.run_pack, runner.without_results, runner.pick_results, runner.stop_task)
)


class DaskUnreachable(ConnectionError):
    pass


class DaskMismatch(DaskUnreachable):
    """The cluster cannot read what the engine pickles (another cloudpickle major version)."""


def mismatched(versions: dict[str, Any]) -> list[str]:
    """The scheduler and workers whose cloudpickle major differs from the engine's, as `where (version)`."""
    mine = runner.cloudpickle_version().split(".")[0]
    found = {"scheduler": versions.get("scheduler", {}), **versions.get("workers", {})}
    return [
        f"{where} ({version})"
        for where, info in found.items()
        if (version := str((info.get("packages") or {}).get("cloudpickle"))).split(".")[0] != mine
    ]


@dataclass
class _Pack:
    """One Dask task running several hetflow tasks; kept while any of its results is wanted."""

    key: str
    future: Any
    tasks: list[str]
    open: set[str] = field(default_factory=set)  # tasks not reported yet
    workers: dict[str, str] = field(default_factory=dict)  # task -> the worker it started on
    kept: set[str] = field(default_factory=set)  # results held on the cluster


class DaskExecutor(Executor):
    kind = "dask"
    address = Unicode("", help="Scheduler address (tcp://host:8786); empty: start a LocalCluster on first use.")
    workers = Int(2, help="Workers of the LocalCluster (one process each).")
    threads_per_worker = Int(1, help="Threads per worker of the LocalCluster.")
    dashboard = Bool(False, help="Serve the LocalCluster's dashboard on 127.0.0.1 (a free port, see executors).")
    connect_timeout = Float(10.0, help="Seconds to reach the scheduler before the tasks fail.")
    pack = Int(0, help="Most tasks per Dask task; 0: spread a batch over twice the cluster's threads, at most 256.")
    stop_grace = Float(
        2.0,
        help="Seconds a cancelled or timed-out task's worker has to confirm its code stopped before the user "
        "is told it is still inside a call (a sleep, a C loop) and stops when that returns.",
    )

    def __init__(self, name: str, reporter: Any, spool: Path, **settings: Any):
        super().__init__(name, reporter, spool, **settings)
        self._client: Any = None
        self._cluster: Any = None
        self._lock: asyncio.Lock | None = None
        self._packs: dict[str, _Pack] = {}
        self._pack_of: dict[str, str] = {}  # task id -> the pack it ran (or runs) in
        self._topic = f"hetflow-{uuid.uuid4().hex[:8]}"
        self._watchdog: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._closing = False
        # futures let go of, released with the next submission: a release sent alone holds the next submission
        # back in the client's batched stream for its interval (10 ms), a loop's every iteration
        self._releasing: list[Any] = []
        self._release_timer: asyncio.TimerHandle | None = None
        self._stopping: dict[tuple[str, str], asyncio.Future[None]] = {}  # (pack, task) -> its worker's word

    # --------------------------------------------------------------------------- connection

    @property
    def where(self) -> str:
        return self.address or "a LocalCluster on 127.0.0.1"

    async def connected(self) -> Any:
        """The client, connecting (or starting the LocalCluster) once."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._client is not None and self._client.status == "running":
                return self._client
            await self._disconnect()
            try:
                self._client = await asyncio.wait_for(self._connect(), self.connect_timeout + 5)
            except (OSError, asyncio.TimeoutError) as err:
                await self._disconnect()
                raise DaskUnreachable(
                    f"cannot reach the Dask scheduler at {self.where} within {self.connect_timeout:g} s: "
                    f"{type(err).__name__}: {err}; is it running? (its address is set in c.Hetflow.executors)"
                ) from None
            wrong = mismatched(await self._client.get_versions()) if self.address else []
            if wrong:
                await self._disconnect()
                raise DaskMismatch(
                    f"the Dask cluster at {self.address} runs another cloudpickle major version than the engine "
                    f"({runner.cloudpickle_version()}): {', '.join(wrong)}; install cloudpickle=="
                    f"{runner.cloudpickle_version().split('.')[0]}.* on the cluster (what one pickles the other "
                    "must read)"
                )
            self._client.subscribe_topic(self._topic, self._on_event)
            return self._client

    async def _connect(self) -> Any:
        import dask
        from distributed import Client, LocalCluster

        if self.address:
            return await Client(self.address, asynchronous=True, timeout=self.connect_timeout, set_as_default=False)
        with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
            self._cluster = await LocalCluster(
                n_workers=self.workers,
                threads_per_worker=self.threads_per_worker,
                host="127.0.0.1",
                scheduler_port=0,
                # the scheduler's HTTP server (health, and the dashboard when asked for) on a free loopback port
                dashboard_address="127.0.0.1:0",
                scheduler_kwargs={"dashboard": self.dashboard},
                asynchronous=True,
                silence_logs=logging.ERROR,
            )
        # not the process's default client: dask code elsewhere in this process (an embedded engine lives in the
        # kernel) must not find the engine's asynchronous client
        return await Client(self._cluster, asynchronous=True, set_as_default=False)

    async def _disconnect(self) -> None:
        client, cluster, self._client, self._cluster = self._client, self._cluster, None, None
        for closable in (client, cluster):
            if closable is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(closable.close(), 10)

    # --------------------------------------------------------------------------- submit

    async def submit(self, jobs: list[Job]) -> None:
        try:
            client = await self.connected()
        except DaskUnreachable as err:
            for job in jobs:
                self.reporter.finished(job.task_id, None, {"type": type(err).__name__, "message": str(err)})
            return
        size = self.pack or min(MAX_PACK, max(1, math.ceil(len(jobs) / (2 * max(1, self._size(client)[1])))))
        read: dict[str, bytes] = {}  # upstream results from the store, read once (and pickled once per pack)
        with self.reporter.batch():
            for start in range(0, len(jobs), size):
                self._launch(client, jobs[start : start + size], read)
        self._release_now()  # in the same batch as the submission
        if self._watchdog is None or self._watchdog.done():
            self._watchdog = asyncio.get_running_loop().create_task(self._watch())

    @staticmethod
    def _size(client: Any) -> tuple[int, int]:
        """(workers, threads) of the cluster, as the client last heard (Dask >= 2025 caches totals, older ones the
        workers)."""
        info = client.scheduler_info()
        workers = info.get("workers", {})
        threads = info.get("total_threads") or sum(w.get("nthreads", 0) for w in workers.values())
        return info.get("n_workers") or len(workers), threads

    def _launch(self, client: Any, jobs: list[Job], read: dict[str, bytes]) -> None:
        key = f"hetflow-pack-{uuid.uuid4().hex}"
        # upstream packs' futures, referred to by position: Dask (before 2025) replaces any value in the arguments
        # that equals a key with that key's result, so a key must not appear in them as a name
        upstream: list[Any] = []
        slots: dict[str, int] = {}
        envelopes = []
        for job in jobs:
            self._forget_result(job.task_id)  # a new attempt: its last result is replaced
            sources: dict[str, Source] = {}
            for ref in job.upstreams():
                held = self._pack_of.get(ref.task_id) if ref.executor == self.name else None
                if held is not None and ref.task_id in self._packs[held].kept:
                    if held not in slots:
                        slots[held] = len(upstream)
                        upstream.append(self._packs[held].future)  # Dask moves it worker to worker
                    sources[ref.task_id] = {"pack": slots[held], "task": ref.task_id}
                else:
                    if ref.result_hash not in read:  # the worker cannot read the engine's disk
                        data = ref.held()
                        if data is None:
                            continue  # not possible: the scheduler brings what this cluster lacks into the store
                        read[ref.result_hash] = data
                    sources[ref.task_id] = {"data": read[ref.result_hash]}
            envelopes.append(envelope(job, sources))
        future = client.submit(RUN_PACK, envelopes, upstream, self._topic, key=key, pure=False)
        pack = _Pack(key, future, [j.task_id for j in jobs], open={j.task_id for j in jobs})
        self._packs[key] = pack
        for job in jobs:
            self._pack_of[job.task_id] = key
            self.reporter.submitted(job.task_id, {"dask_key": key, "pack_size": len(jobs)})
        bring = [job.task_id for job in jobs if job.bring]
        # a pack whose every value is waited for comes back whole (one Dask task); else its outcomes do, with the
        # values waited for, and the rest stays on the cluster
        summary = (
            future
            if len(bring) == len(jobs)
            else client.submit(WITHOUT_RESULTS, future, bring, key=f"{key}-outcomes", pure=False)
        )
        self._in_background(self._follow(pack, summary))

    def _forget_result(self, task: str) -> None:
        pack = self._packs.get(self._pack_of.get(task, ""))
        if pack is not None:
            pack.kept.discard(task)
            self._release_if_done(pack)

    def _in_background(self, coro: Any) -> None:
        work = asyncio.get_running_loop().create_task(coro)
        self._background.add(work)
        work.add_done_callback(self._background.discard)

    async def _follow(self, pack: _Pack, summary: Any) -> None:
        """Wait for the pack's outcomes (hashes and errors, not the results) and report them together."""
        try:
            outcomes = await summary
        except Exception as err:
            if not self._closing:  # tasks running when the engine stops are left to the next engine
                self._fail_pack(pack, _failure(err, self.where))
            return
        finally:
            self._release_soon(summary)
        with self.reporter.batch():
            for outcome in outcomes:
                task = outcome["task"]
                if task not in pack.open or self._pack_of.get(task) != pack.key:
                    continue  # cancelled meanwhile, or run again in a newer pack
                pack.open.discard(task)
                handle = {"dask_key": pack.key, "pack": outcome.get("pack"), "worker": outcome.get("worker")}
                self.reporter.started(task, handle)  # if its own word has not come yet
                if outcome["error"] is None and outcome.get("result") is not None:  # brought: nothing kept
                    self.reporter.finished(task, outcome["result"], None)
                elif outcome["error"] is None:
                    pack.kept.add(task)
                    self.reporter.finished(task, KeptResult(outcome["hash"], outcome["size"]), None)
                else:
                    self.reporter.finished(task, None, outcome["error"])
        self._release_if_done(pack)

    def _fail_pack(self, pack: _Pack, error: dict[str, str]) -> None:
        with self.reporter.batch():
            for task in sorted(pack.open):
                self.reporter.finished(task, None, error)
        pack.open.clear()
        self._release_if_done(pack)

    def _release_if_done(self, pack: _Pack) -> None:
        """Let Dask forget a pack once nothing of it is wanted (every result fetched, or none kept)."""
        if pack.open or pack.kept:
            return
        self._packs.pop(pack.key, None)
        for task in pack.tasks:
            if self._pack_of.get(task) == pack.key:
                del self._pack_of[task]
        self._release_soon(pack.future)

    def _release_soon(self, future: Any) -> None:
        """Let Dask forget a future with the next submission, or after RELEASE_IDLE seconds without one."""
        self._releasing.append(future)
        if self._release_timer is None:
            self._release_timer = asyncio.get_running_loop().call_later(RELEASE_IDLE, self._release_now)

    def _release_now(self) -> None:
        releasing, self._releasing = self._releasing, []
        if self._release_timer is not None:
            self._release_timer.cancel()
            self._release_timer = None
        for future in releasing:
            with contextlib.suppress(Exception):
                future.release()

    def _on_event(self, event: tuple[float, dict[str, Any]]) -> None:
        message = event[1]
        task = str(message.get("task"))
        if message["op"] == "stopped":
            waiting = self._stopping.get((str(message.get("key")), task))
            if waiting is not None and not waiting.done():
                waiting.set_result(None)
            return
        pack = self._packs.get(self._pack_of.get(task, ""))
        if pack is None or task not in pack.open or message.get("key") != pack.key:
            return
        if message["op"] == "started":
            pack.workers[task] = message["worker"]
            handle = {"dask_key": pack.key, "pack": message["pack"], "worker": message["worker"]}
            self.reporter.started(task, handle)
        elif message["op"] == "log":
            self.reporter.log(task, message["stream"], message["text"])

    async def _watch(self) -> None:
        """While tasks run: a scheduler that went away (and did not come back within connect_timeout) fails them."""
        lost_since: float | None = None
        loop = asyncio.get_running_loop()
        while any(p.open for p in self._packs.values()):
            await asyncio.sleep(0.5)
            client = self._client
            if client is not None and client.status == "running":
                lost_since = None
                continue
            lost_since = lost_since or loop.time()
            if loop.time() - lost_since >= self.connect_timeout:
                error = {"type": "DaskSchedulerGone", "message": f"the Dask scheduler at {self.where} went away"}
                for pack in list(self._packs.values()):
                    pack.kept.clear()
                    self._fail_pack(pack, error)
                await self._disconnect()
                return

    # --------------------------------------------------------------------------- results and control

    def holds(self, task_id: str, digest: str = "") -> bool:
        pack = self._packs.get(self._pack_of.get(task_id, ""))
        return pack is not None and task_id in pack.kept and pack.future.status == "finished"

    async def fetch_results(self, kept: dict[str, str]) -> list[bytes]:
        client = await self.connected()
        by_pack: dict[str, list[str]] = {}
        for task in kept:
            if not self.holds(task):
                raise LookupError(f"the {self.name} executor no longer holds the result of task {task}")
            by_pack.setdefault(self._pack_of[task], []).append(task)
        picks = [
            client.submit(PICK_RESULTS, self._packs[key].future, tasks, pure=False) for key, tasks in by_pack.items()
        ]
        found: dict[str, bytes] = {}
        for (key, tasks), chunk in zip(by_pack.items(), await client.gather(picks), strict=True):
            found.update(zip(tasks, chunk, strict=True))
            pack = self._packs.get(key)  # a fetch of the same results at the same time may have released it
            if pack is not None:
                pack.kept.difference_update(tasks)
                self._release_if_done(pack)
        return [found[task] for task in kept]

    async def cancel(self, task_id: str) -> str | None:
        """Stop the task in the worker thread that runs it (runner.stop_task), or before its turn in its pack; then
        wait up to stop_grace for the worker's word that it stopped. A pack of one not started yet is also dropped
        from the cluster's queue."""
        pack = self._packs.get(self._pack_of.get(task_id, ""))
        if pack is None or task_id not in pack.open or self._client is None:
            return None
        pack.open.discard(task_id)
        client, worker = self._client, pack.workers.get(task_id)
        stopped = self._stopping[(pack.key, task_id)] = asyncio.get_running_loop().create_future()
        try:
            running = await client.run(STOP_TASK, pack.key, task_id, workers=[worker] if worker else None)
            if not any(running.values()):
                if len(pack.tasks) == 1:
                    await client.cancel(pack.future)
                return None  # not started: it will not
            try:
                await asyncio.wait_for(asyncio.shield(stopped), self.stop_grace)
                return None
            except asyncio.TimeoutError:
                where = next(iter(address for address, yes in running.items() if yes))
                return (
                    f"its code is inside a call that does not return to Python on Dask worker {where}; it stops "
                    "when that call returns, and nothing it does after is kept"
                )
        finally:
            self._stopping.pop((pack.key, task_id), None)
            self._release_if_done(pack)

    def describe(self) -> dict[str, Any]:
        client = self._client
        info: dict[str, Any] = {"kind": self.kind, "address": self.address or "LocalCluster"}
        if client is not None:
            info["scheduler"] = client.scheduler.address
            info["workers"], info["threads"] = self._size(client)
            if self._cluster is not None and self.dashboard:
                info["dashboard"] = self._cluster.dashboard_link
        else:
            info["connected"] = False
        info["packs"] = sum(bool(p.open) for p in self._packs.values())
        info["results_kept"] = sum(len(p.kept) for p in self._packs.values())
        info["healthy"] = client is None or client.status == "running"
        return info

    async def reach(self) -> str | None:
        await self.connected()
        return None

    async def close(self) -> None:
        """Disconnect without reporting: tasks still running are the next engine's (they run again once)."""
        self._closing = True
        for work in [self._watchdog, *self._background]:
            if work is not None:
                work.cancel()
        self._release_now()
        await self._disconnect()


def _failure(err: BaseException, where: str) -> dict[str, str]:
    """A pack's Dask task that ended without outcomes: what the user is told."""
    kind = type(err).__name__
    if kind == "KilledWorker":
        return {"type": "WorkerDied", "message": f"the Dask worker running the task died ({err})"}
    if isinstance(err, (asyncio.CancelledError, OSError)) or kind in ("CancelledError", "FutureCancelledError"):
        detail = f"{kind}: {err}" if str(err) else kind
        return {"type": "DaskSchedulerGone", "message": f"the Dask scheduler at {where} went away ({detail})"}
    return {"type": kind, "message": str(err)}
