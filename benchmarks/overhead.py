"""Overhead of a trivial `%%remote executor=local` cell, magic start to value in the namespace.

Two engines: embedded in the kernel, and in a Jupyter server (HTTP + WebSocket on loopback). Baseline, same run:
a bare cloudpickle round trip through a warm worker process over a pipe, the least any out-of-process execution
can cost. Each mode runs in a child process of its own (a kernel has one engine). Run: `make bench`.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


def measure_cells(rounds: int) -> dict[str, list[float]]:
    """In this process: an IPython shell with hetflow, whatever engine it finds."""
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "hetflow")
    found: dict[str, list[float]] = {}
    for label, line in (("run", "executor=local cache=false"), ("hit", "executor=local")):
        for _ in range(20):
            shell.run_cell_magic("remote", line, "x = 1")
        times = []
        for _ in range(rounds):
            shell.user_ns.pop("x", None)
            start = time.perf_counter()
            shell.run_cell_magic("remote", line, "x = 1")
            times.append(time.perf_counter() - start)
            assert shell.user_ns["x"] == 1
        found[label] = times
    from hetflow.client import get_client

    found["mode"] = get_client().describe()  # type: ignore[assignment]
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def in_child(env: dict[str, str]) -> dict[str, list[float]]:
    out = subprocess.run([sys.executable, __file__, "--cells"], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    with tempfile.TemporaryDirectory() as root:
        dirs = {name: os.path.join(root, name) for name in ("data", "config", "runtime")}
        env = {**os.environ, **{f"JUPYTER_{k.upper()}_DIR": v for k, v in dirs.items()}}
        base = baseline(ROUNDS)
        embedded = in_child(env)
        server = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "jupyter-server"),
                "--ServerApp.ip=127.0.0.1",
                f"--ServerApp.port={free_port()}",
                "--ServerApp.allow_root=True",
                "--ServerApp.open_browser=False",
                f"--ServerApp.root_dir={root}",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            while not Path(dirs["runtime"], f"hetflow-{server.pid}.json").exists():
                time.sleep(0.1)
            served = in_child(env)
        finally:
            server.terminate()
            server.wait()

    def ms(values: list[float], q: float = 0.5) -> float:
        return (statistics.median(values) if q == 0.5 else statistics.quantiles(values, n=10)[8]) * 1000

    print(f"trivial cell `x = 1`, {ROUNDS} rounds each, {os.cpu_count()} cores")
    print(f"{'':44} {'median':>9} {'p90':>9} {'ratio':>7}")
    rows = [("bare cloudpickle round trip (baseline)", base)]
    for label, result in (("embedded", embedded), ("server", served)):
        rows += [(f"{label}: %%remote cache=false", result["run"]), (f"{label}: %%remote (cache hit)", result["hit"])]
    for name, values in rows:
        print(f"{name:44} {ms(values):8.3f}ms {ms(values, 0.9):8.3f}ms {ms(values) / ms(base):6.1f}x")
    for label, result in (("embedded", embedded), ("server", served)):
        verdict = "met" if ms(result["run"]) <= 3 else "NOT met"
        print(f"{label} engine ({result['mode']}): median {ms(result['run']):.2f} ms, target <= 3 ms {verdict}")


if __name__ == "__main__":
    if sys.argv[1:] == ["--cells"]:
        print(json.dumps(measure_cells(ROUNDS)))
    else:
        main()
