"""Throughput of many small tasks, the case packing exists for. Run: `make bench` (or this file alone).

1. 2,000 trivial `foreach` elements on the `dask` executor against raw `client.map` + `gather` of the same
   function on the same LocalCluster (2 workers, 1 thread each), in this process. Target: ratio >= 1.0.
2. 10,000 trivial `foreach` elements on `local` (2 warm workers). Target: >= 3,000 tasks/s.
3. A loop of 200 `hetflow.run(fn, x, executor="dask")` calls against raw `client.submit(fn, x).result()` on the
   same cluster, interleaved call by call. Target: <= 5 ms more per call (median).
4. A chain of 100 dependent `wait=false` cells on `local`: the time per edge, submission of the first cell to the
   value of the last. Target: <= 5 ms per edge. Baseline: a bare cloudpickle round trip through a warm process.

Times are magic start to every value in the namespace. The engine is embedded in this process's IPython shell,
with a store of its own.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

DASK_ELEMENTS = 2000
LOCAL_ELEMENTS = 10000
CHAIN = 100
LOOP = 200


def configure(root: str, scheduler: str) -> None:
    """Jupyter dirs of our own, and the executors the runs use (hetflow reads them when it loads)."""
    for name in ("data", "config", "runtime"):
        os.environ[f"JUPYTER_{name.upper()}_DIR"] = os.path.join(root, name)
    os.makedirs(os.path.join(root, "config"))
    executors = {
        "local": {"kind": "local", "workers": 2},
        "dask": {"kind": "dask", "address": scheduler},
    }
    with open(os.path.join(root, "config", "jupyter_server_config.json"), "w") as fh:
        json.dump({"Hetflow": {"executors": executors}}, fh)


def timed(work) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def raw_map(client, n: int) -> float:
    def square(i: int) -> int:
        return i * i

    def run() -> None:
        futures = client.map(square, range(n), pure=False)
        assert client.gather(futures)[-1] == (n - 1) ** 2

    run()  # warm: functions shipped, workers ready
    return timed(run)


def foreach(shell, executor: str, n: int) -> float:
    def run() -> None:
        shell.run_cell_magic("remote", f"foreach=i:range({n}) executor={executor} cache=false", "y = i * i\n")
        assert shell.user_ns["y"][-1] == (n - 1) ** 2

    shell.run_cell_magic("remote", f"foreach=i:range(20) executor={executor} cache=false", "y = i\n")  # warm
    return timed(run)


def dask_loop(client, n: int) -> tuple[float, float]:
    """Median seconds per call: hetflow.run on dask, and raw submit().result(), alternating."""
    import statistics

    import hetflow

    def step(x: int) -> int:
        return x + 1

    times: dict[str, list[float]] = {"hetflow": [], "raw": []}
    for k in range(n + 20):
        start = time.perf_counter()
        assert hetflow.run(step, k, executor="dask", cache=False) == k + 1
        middle = time.perf_counter()
        assert client.submit(step, k, pure=False).result() == k + 1
        if k >= 20:  # warm
            times["hetflow"].append(middle - start)
            times["raw"].append(time.perf_counter() - middle)
    return statistics.median(times["hetflow"]), statistics.median(times["raw"])


def chain(shell, n: int) -> float:
    def run() -> None:
        shell.run_cell_magic("remote", "wait=false executor=local cache=false", "c0 = 0\n")
        for k in range(1, n + 1):
            shell.run_cell_magic("remote", "wait=false executor=local cache=false", f"c{k} = c{k - 1} + 1\n")
        assert shell.user_ns[f"c{n}"].result() == n

    return timed(run)


def main() -> None:
    from distributed import Client, LocalCluster
    from IPython.core.interactiveshell import InteractiveShell
    from overhead import baseline

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address="127.0.0.1:0")
    client = Client(cluster)
    with tempfile.TemporaryDirectory() as root:
        configure(root, cluster.scheduler_address)
        shell = InteractiveShell.instance()
        shell.run_line_magic("load_ext", "hetflow")

        raw = raw_map(client, DASK_ELEMENTS)
        on_dask = foreach(shell, "dask", DASK_ELEMENTS)
        on_local = foreach(shell, "local", LOCAL_ELEMENTS)
        chained = chain(shell, CHAIN)
        loop_hetflow, loop_raw = dask_loop(client, LOOP)
        bare = sorted(baseline(200))[100]
        from hetflow.client import get_client

        get_client().close()
    client.close()
    cluster.close()

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    ratio = raw / on_dask
    rate = LOCAL_ELEMENTS / on_local
    edge = chained / CHAIN * 1000
    print(f"{os.cpu_count()} cores; dask LocalCluster 2 workers x 1 thread; local executor 2 workers")
    print(
        f"dask   {DASK_ELEMENTS} foreach elements: hetflow {on_dask:.2f} s ({DASK_ELEMENTS / on_dask:.0f} tasks/s), "
        f"raw client.map {raw:.2f} s ({DASK_ELEMENTS / raw:.0f} tasks/s): "
        f"ratio {ratio:.2f}x, target >= 1.0x {verdict(ratio >= 1.0)}"
    )
    print(
        f"local  {LOCAL_ELEMENTS} foreach elements: {on_local:.2f} s, {rate:.0f} tasks/s, "
        f"target >= 3000 {verdict(rate >= 3000)}"
    )
    extra = (loop_hetflow - loop_raw) * 1000
    print(
        f"dask   {LOOP} hetflow.run calls: {loop_hetflow * 1000:.2f} ms per call, raw submit().result() "
        f"{loop_raw * 1000:.2f} ms: {extra:.2f} ms more per call (median), target <= 5 ms {verdict(extra <= 5)}"
    )
    print(
        f"chain  {CHAIN} dependent wait=false cells: {chained:.2f} s, {edge:.2f} ms per edge "
        f"(bare round trip {bare * 1000:.2f} ms), target <= 5 ms {verdict(edge <= 5)}"
    )


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(__file__))
    main()
