"""A trivial cell through hetflow's slurm executor vs raw `sbatch --parsable` + `squeue` polling, and a 32-element
trivial foreach (one packed sbatch) vs one trivial cell, and a 100-call `hetflow.run` loop on a warm allocation
(keep_alive=120) vs the same loop with keep_alive=0, same run.

Both go over the same paramiko connection to the cluster of `scripts/services.sh` (as its non-root user) and poll
every 50 ms; the raw job runs the same remote Python on a trivial statement. Rounds alternate, so load drift hits
both alike. Run: `bash scripts/services.sh up`, then `.venv/bin/python benchmarks/slurm.py`.
"""

from __future__ import annotations

import shlex
import statistics
import time

from cluster_engine import embedded

ROUNDS = 20
POLL = 0.05
FOREACH, FOREACH_ROUNDS = 32, 5
LOOP = 100


def main() -> None:
    # the same cluster with a warm allocation: its tasks come back pushed by the follower, not polled
    client, shell, cluster = embedded({"slurm": {"poll_interval": POLL}, "slurm-warm": {"keep_alive": 120}})
    python = cluster["HETFLOW_REMOTE_PYTHON"]
    executor = client.engine.executors["slurm"]
    transport = client.call(executor.prepared())  # connected once; both measurements share it

    wrapped = shlex.quote(python + ' -c "x = 1"')

    async def raw_job() -> None:
        submitted = await transport.run(f"sbatch --parsable --wrap {wrapped}")
        job = submitted.out.strip().split(";")[0]
        while True:
            state = (await transport.run(f"squeue -h --states=all -j {job} -o %T")).out.strip()
            if state in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"):
                return
            await _sleep(POLL)

    raw, cells = [], []
    for i in range(ROUNDS + 2):
        start = time.perf_counter()
        client.call(raw_job())
        raw_time = time.perf_counter() - start
        start = time.perf_counter()
        shell.run_cell_magic("remote", "executor=slurm cache=false", f"x = {i}")
        cell_time = time.perf_counter() - start
        assert shell.user_ns["x"] == i
        if i >= 2:  # warm-up rounds left out
            raw.append(raw_time)
            cells.append(cell_time)
    singles, packed = [], []
    for i in range(FOREACH_ROUNDS):  # a packed foreach against one trivial cell, alternating
        start = time.perf_counter()
        shell.run_cell_magic("remote", "executor=slurm cache=false", f"x = {i}")
        singles.append(time.perf_counter() - start)
        start = time.perf_counter()
        shell.run_cell_magic("remote", f"executor=slurm cache=false foreach=k:range({FOREACH})", f"y = k + {i}")
        packed.append(time.perf_counter() - start)
        assert shell.user_ns["y"] == [k + i for k in range(FOREACH)]
    import hetflow

    def step(x: int) -> int:
        return x + 1

    loops = {}
    for name in ("slurm-warm", "slurm"):  # keep_alive=120, then keep_alive=0: a job per call
        hetflow.run(step, -1, executor=name, cache=False)  # warm: the allocation started, the function shipped
        times = []
        for i in range(LOOP):
            start = time.perf_counter()
            assert hetflow.run(step, i, executor=name, cache=False) == i + 1
            times.append(time.perf_counter() - start)
        loops[name] = statistics.median(times)
    client.close()
    r, c = statistics.median(raw), statistics.median(cells)
    print(f"trivial job on the services' Slurm over SSH, {ROUNDS} alternating rounds, polls {POLL * 1000:.0f} ms apart")
    print(f"raw sbatch --parsable + squeue polling (baseline): median {r * 1000:7.1f} ms")
    print(f"%%remote executor=slurm (x = 1):                   median {c * 1000:7.1f} ms")
    print(f"ratio hetflow/raw: {c / r:.2f}x (target <= 1.1x)")
    s, p = statistics.median(singles), statistics.median(packed)
    print(f"{FOREACH}-element trivial foreach, {FOREACH_ROUNDS} rounds alternating with one trivial cell:")
    print(f"one trivial cell (baseline):                       median {s * 1000:7.1f} ms")
    print(f"foreach=k:range({FOREACH}) (one packed sbatch):          median {p * 1000:7.1f} ms")
    print(f"ratio foreach/one cell: {p / s:.2f}x (target <= 2x)")
    print(f"{LOOP} sequential hetflow.run calls of a trivial function:")
    print(f"keep_alive=0 (a job per call, baseline):           median {loops['slurm'] * 1000:7.1f} ms")
    print(f"keep_alive=120 (a warm allocation):         median {loops['slurm-warm'] * 1000:7.1f} ms (target <= 100)")


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


if __name__ == "__main__":
    main()
