"""Data movement to the services' Slurm over SSH: a 64 MB input read by an 8-element foreach and two later cells,
and a chain of two cells where the first makes 64 MB that the second reduces, with the blob store (the input
crosses once; the result stays on the cluster) against the same runs with it off (`blob_min=0`: every task carries
its inputs, every result comes to the engine), same process. Bytes are the TCP counters of the engine's SSH
connections (`ss -ti`), both ways, so they include the SSH framing, the polls and the results. Run:
`bash scripts/services.sh up`, then `.venv/bin/python benchmarks/data.py`.
"""

from __future__ import annotations

import os
import time

from cluster_engine import embedded, link_bytes

SIZE = 64 << 20


def main() -> None:
    fast = {"poll_interval": 0.05}
    client, shell, cluster = embedded({"blobs": fast, "whole": {**fast, "blob_min": 0}})
    shell.user_ns["big"] = os.urandom(SIZE)
    shell.run_cell("import os")
    figures, chains = {}, {}
    for name in ("whole", "blobs"):
        client.call(client.engine.executors[name].prepared())
        shell.run_cell_magic("remote", f"executor={name} cache=false", "warm = 1")  # the runner shipped, the link up
        client.call(client.engine.clean(name))  # nothing left from an earlier run
        before, start = link_bytes(cluster), time.perf_counter()
        shell.run_cell_magic("remote", f"executor={name} cache=false foreach=k:range(8)", "size = len(big) + k")
        assert shell.user_ns["size"] == [SIZE + k for k in range(8)]
        for extra in (1, 2):
            shell.run_cell_magic("remote", f"executor={name} cache=false", f"later = len(big) + {extra}")
            assert shell.user_ns["later"] == SIZE + extra
        figures[name] = (link_bytes(cluster) - before, time.perf_counter() - start)
        before, start = link_bytes(cluster), time.perf_counter()  # a chain: the first's output never read here
        shell.run_cell_magic("remote", f"executor={name} cache=false wait=false", f"made = os.urandom({SIZE})")
        shell.run_cell_magic("remote", f"executor={name} cache=false", "reduced = sum(made[:1000])")
        assert isinstance(shell.user_ns["reduced"], int)
        chains[name] = (link_bytes(cluster) - before, time.perf_counter() - start)
    client.close()
    print(f"a {SIZE >> 20} MB input read by an 8-element foreach and two later cells, Slurm over SSH:")
    for name, label in (("whole", "every task carries its inputs (baseline)"), ("blobs", "the blob store")):
        moved, took = figures[name]
        print(f"{label:<42} {moved / 1e6:8.1f} MB over the link ({moved / SIZE:5.2f}x the input), {took:6.2f} s")
    (blobs, blob_time), (whole, whole_time) = figures["blobs"], figures["whole"]
    print(f"blob store: {blobs / SIZE:.2f}x the input's size over the link (target <= 2.5x); against the baseline")
    print(f"ratio blob store/baseline: {blobs / whole:.2f}x the bytes, {blob_time / whole_time:.2f}x the time")
    print(f"a chain of two cells, the first making {SIZE >> 20} MB (wait=false, never read here), the second reducing")
    labels = ("results come to the engine (baseline)", "results stay in the blob store")
    for name, label in zip(("whole", "blobs"), labels, strict=True):
        moved, took = chains[name]
        print(f"{label:<42} {moved / 1e6:8.1f} MB over the link ({moved / SIZE:5.2f}x its size), {took:6.2f} s")
    print(f"blob store: {chains['blobs'][0] / SIZE:.2f}x the result's size over the link (target <= 1.2x)")


if __name__ == "__main__":
    main()
