"""The result cache: an unchanged cell is served without running; any change to code or inputs runs it again."""

from __future__ import annotations

from pathlib import Path

from kernels import Kernel

CELL = "%%remote\nopen(runs_file, 'a').write('run\\n')\nscaled = base * 2\n"


def runs(kernel: Kernel) -> int:
    path = Path(kernel.value("runs_file"))
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_unchanged_cell_is_served_from_the_cache_without_running(kernel: Kernel) -> None:
    kernel.run(f"runs_file = {str(kernel.root / 'cache-a.txt')!r}\nbase = 21").check()
    kernel.run(CELL).check()
    tasks_before = kernel.task_count()
    kernel.run("scaled = None").check()
    out = kernel.run(CELL).check()
    assert runs(kernel) == 1, "the cached cell ran again"
    assert kernel.task_count() == tasks_before, "a cache hit must not create a task"
    assert kernel.value("scaled") == 42
    assert out.duration < 1.0


def test_editing_the_cell_runs_it_again(kernel: Kernel) -> None:
    kernel.run(f"runs_file = {str(kernel.root / 'cache-b.txt')!r}\nbase = 1").check()
    kernel.run(CELL).check()
    kernel.run(CELL.replace("base * 2", "base * 3")).check()
    assert runs(kernel) == 2
    assert kernel.value("scaled") == 3


def test_changing_an_input_runs_it_again(kernel: Kernel) -> None:
    kernel.run(f"runs_file = {str(kernel.root / 'cache-c.txt')!r}\nbase = 5").check()
    kernel.run(CELL).check()
    kernel.run("base = 6").check()
    kernel.run(CELL).check()
    assert runs(kernel) == 2
    assert kernel.value("scaled") == 12
    kernel.run("base = 5").check()
    kernel.run(CELL).check()
    assert runs(kernel) == 2, "the first version's result is still cached"
    assert kernel.value("scaled") == 10


def test_cache_false_always_runs(kernel: Kernel) -> None:
    kernel.run(f"runs_file = {str(kernel.root / 'cache-d.txt')!r}\nbase = 2").check()
    for _ in range(2):
        kernel.run(CELL.replace("%%remote", "%%remote cache=false")).check()
    assert runs(kernel) == 2


def test_a_failed_task_is_not_cached(kernel: Kernel) -> None:
    path = kernel.root / "cache-e.txt"
    cell = f"%%remote\nopen({str(path)!r}, 'a').write('run\\n')\nraise RuntimeError('flaky')\n"
    assert not kernel.run(cell).ok
    assert not kernel.run(cell).ok
    assert len(path.read_text().splitlines()) == 2


def test_a_cell_that_read_a_future_is_served_from_the_cache_once_it_became_its_value(kernel: Kernel) -> None:
    kernel.run(f"runs_file = {str(kernel.root / 'cache-f.txt')!r}").check()
    kernel.run("%%remote wait=false\nimport time\ntime.sleep(1.0)\nbase = 4\n").check()
    assert kernel.value("type(base).__name__") == "Future"
    kernel.run(CELL).check()  # reads the unfinished future: a dependency on its task
    assert kernel.value("[type(base).__name__, scaled]") == ["int", 8]
    kernel.run(CELL).check()  # reads the value it became: the same data, so the same key
    assert runs(kernel) == 1, "the cell ran again once its input was a value instead of a future"
    kernel.run("base = 5").check()  # changed in the kernel: no longer that output
    kernel.run(CELL).check()
    assert runs(kernel) == 2 and kernel.value("scaled") == 10
