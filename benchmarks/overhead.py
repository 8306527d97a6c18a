"""Overhead of a trivial `%%remote executor=local` cell, magic start to value in the namespace.

Baseline, same run: a bare cloudpickle round trip of the same value through a warm worker process over a pipe,
the least any out-of-process execution can cost. Run: `make bench` (or `.venv/bin/python benchmarks/overhead.py`).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time

import cloudpickle

ROUNDS = 300

ECHO = r"""
import os, struct, sys, cloudpickle
H = struct.Struct(">Q")
def read(n):
    b = b""
    while len(b) < n:
        c = os.read(0, n - len(b))
        if not c: sys.exit(0)
        b += c
    return b
while True:
    fn, arg = cloudpickle.loads(read(H.unpack(read(H.size))[0]))
    out = cloudpickle.dumps(fn(arg))
    os.write(1, H.pack(len(out)) + out)
"""


def baseline(rounds: int) -> list[float]:
    """Send a function and its argument to a warm process, get the value back."""
    import struct

    header = struct.Struct(">Q")
    proc = subprocess.Popen([sys.executable, "-c", ECHO], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin and proc.stdout

    def call() -> object:
        data = cloudpickle.dumps((lambda v: {"x": v}, 1))
        proc.stdin.write(header.pack(len(data)) + data)
        proc.stdin.flush()
        size = header.unpack(proc.stdout.read(header.size))[0]
        return cloudpickle.loads(proc.stdout.read(size))

    for _ in range(20):
        call()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    proc.stdin.close()
    proc.wait()
    return times


def hetflow_cell(rounds: int, cache: bool) -> list[float]:
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    if "hetflow" not in shell.extension_manager.loaded:
        shell.run_line_magic("load_ext", "hetflow")
    line = "executor=local" + ("" if cache else " cache=false")
    for _ in range(20):
        shell.run_cell_magic("remote", line, "x = 1")
    times = []
    for _ in range(rounds):
        shell.user_ns.pop("x", None)
        start = time.perf_counter()
        shell.run_cell_magic("remote", line, "x = 1")
        times.append(time.perf_counter() - start)
        assert shell.user_ns["x"] == 1
    return times


def ms(values: list[float], q: float = 0.5) -> float:
    return (
        statistics.quantiles(values, n=100)[int(q * 100) - 1] * 1000 if q != 0.5 else statistics.median(values) * 1000
    )


def main() -> None:
    with tempfile.TemporaryDirectory() as root:
        os.environ["JUPYTER_DATA_DIR"] = os.path.join(root, "data")
        os.environ["JUPYTER_CONFIG_DIR"] = os.path.join(root, "config")
        base = baseline(ROUNDS)
        run = hetflow_cell(ROUNDS, cache=False)
        hit = hetflow_cell(ROUNDS, cache=True)
    print(f"trivial cell `x = 1`, {ROUNDS} rounds each, {os.cpu_count()} cores")
    print(f"{'':38} {'median':>9} {'p90':>9}")
    print(f"{'bare cloudpickle round trip (baseline)':38} {ms(base):8.3f}ms {ms(base, 0.9):8.3f}ms")
    print(f"{'%%remote executor=local cache=false':38} {ms(run):8.3f}ms {ms(run, 0.9):8.3f}ms")
    print(f"{'%%remote executor=local (cache hit)':38} {ms(hit):8.3f}ms {ms(hit, 0.9):8.3f}ms")
    print(
        f"ratio hetflow/baseline (median): {ms(run) / ms(base):.2f}x; target: median <= 3 ms -> "
        f"{'met' if ms(run) <= 3 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
