"""Cell code for workflow tests, shared by the local and the Dask runs: each task notes its runs in a file, so the
tests count real runs."""

from __future__ import annotations

from pathlib import Path

from kernels import Kernel


def note(runs: Path, label: str) -> str:
    """A line of cell code that records one run of the task in `runs`."""
    return f"open({str(runs)!r}, 'a').write({label!r} + '\\n')\n"


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def info(kernel: Kernel, name: str) -> dict:
    return kernel.value(f"__import__('hetflow.client').client.get_client().find({name!r}).to_json()")


def diamond_with_failing_join_input(kernel: Kernel, prefix: str, runs: Path, fixed: Path) -> None:
    """A -> B, A -> C, B + C -> D as wait=false cells, where B fails until `fixed` exists."""
    kernel.run(f"%%remote wait=false\n{note(runs, 'A')}{prefix}_a = 1\n").check()
    kernel.run(
        f"%%remote wait=false\nimport os, time\ntime.sleep(0.3)\n{note(runs, 'B')}"
        f"if not os.path.exists({str(fixed)!r}):\n    raise ValueError('B needs fixing')\n{prefix}_b = {prefix}_a + 1\n"
    ).check()
    kernel.run(f"%%remote wait=false\n{note(runs, 'C')}{prefix}_c = {prefix}_a + 2\n").check()
    kernel.run(f"%%remote wait=false\n{note(runs, 'D')}{prefix}_d = {prefix}_b + {prefix}_c\n").check()
