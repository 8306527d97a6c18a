"""Cell code for workflow tests, shared by the local and the Dask runs: each task notes its runs in a file, so the
tests count real runs."""

from __future__ import annotations

from pathlib import Path

from kernels import Kernel


def note(runs: Path, label: str) -> str:
    """A line of cell code that records one run of the task in `runs`."""
    return f"open({str(runs)!r}, 'a').write({label!r} + '\\n')\n"


def escaping_child(marker: Path, after: float) -> str:
    """Code that starts a process in its own session (out of reach of a signal to the task's process group) that
    writes `marker` after `after` seconds."""
    return (
        "import subprocess\n"
        f"subprocess.Popen(['sh', '-c', 'sleep {after}; echo ran on > {marker}'], start_new_session=True)\n"
    )


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


def foreach_with_failing_elements(
    kernel: Kernel, runs: Path, fixed: Path, options: str, count: int, failing: tuple[int, ...]
) -> str:
    """A wait=false foreach of `count` whose `failing` elements fail until `fixed` exists: checks that only those
    failed and every element ran once; returns the cell (wait=false) for running it again."""
    cell = (
        f"%%remote {options} foreach=i:range({count}) wait=false\nimport os\n"
        f"open({str(runs)!r}, 'a').write(f'{{i}}\\n')\n"
        f"if i in {failing!r} and not os.path.exists({str(fixed)!r}):\n    raise ValueError(f'element {{i}}')\n"
        "squares = i * i\n"
    )
    kernel.run(cell).check()
    out = kernel.run("squares")
    assert not out.ok and f"{len(failing)} of {count} elements did not complete" in out.traceback, out.traceback
    assert f"ValueError: element {failing[0]}" in out.traceback
    assert sorted(map(int, lines(runs))) == list(range(count))
    return cell


def rerun_reruns_only_the_failed(kernel: Kernel, runs: Path, fixed: Path, count: int, failing: tuple[int, ...]) -> None:
    fixed.touch()
    fixed.chmod(0o666)  # the jobs' user reads it
    assert f"re-running {len(failing)} task(s)" in kernel.run("%remote rerun squares").check().stdout
    assert kernel.value("squares") == [i * i for i in range(count)]
    assert sorted(map(int, lines(runs))) == sorted([*range(count), *failing])
