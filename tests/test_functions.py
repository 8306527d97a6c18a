"""`hetflow.submit` / `hetflow.run` in a real kernel: functions as tasks, their arguments, the parameters an
executor fills, and futures as dependencies."""

from __future__ import annotations

import time

from kernels import Kernel


def test_a_functions_own_default_holds_on_an_executor_that_provides_nothing(kernel: Kernel) -> None:
    kernel.run(
        "import functools, hetflow\n"
        "def sample(x, shots=100):\n    return x * shots\n"
        "def keyword_only(*xs, device='none'):\n    return (sum(xs), device)\n"
        "fn_defaults = [hetflow.run(sample, 2), hetflow.run(sample, 2, 3), hetflow.run(functools.partial(sample, "
        "shots=7), 2), hetflow.run(keyword_only, 1, 2)]\n"
    ).check()
    assert kernel.value("fn_defaults") == [200, 6, 14, [3, "none"]]


def test_a_future_handed_to_submit_in_a_later_cell_is_a_dependency_not_a_wait(kernel: Kernel) -> None:
    kernel.run(
        "import hetflow, time\n"
        "def slow(x):\n    time.sleep(1.5)\n    return x\n"
        "def double(x):\n    return 2 * x\n"
        "fn_slow = hetflow.submit(slow, 21, cache=False)\nfn_slow_id = fn_slow.task_id\n"
    ).check()
    started = time.monotonic()
    kernel.run("fn_double = hetflow.submit(double, fn_slow, after=fn_slow)\nfn_double_id = fn_double.task_id\n").check()
    assert time.monotonic() - started < 1.0, "the cell waited for the future it handed over"
    assert kernel.value("fn_double.result()") == 42
    task = kernel.value("__import__('hetflow.client').client.get_client().find(fn_double_id).to_json()")
    assert task["refs"] == {"__arg0__": [kernel.value("fn_slow_id"), "result"]}


def test_a_future_inside_another_value_and_an_unpicklable_argument_are_clear_errors(kernel: Kernel) -> None:
    kernel.run("import hetflow, threading, time\n").check()
    nested = kernel.run("fn_nap = hetflow.submit(time.sleep, 0.5)\nhetflow.run(print, [fn_nap, 1])")
    assert "a hetflow future cannot travel inside another value" in nested.traceback, nested.traceback
    locked = kernel.run("hetflow.run(print, threading.Lock())")
    assert "argument 1 of print (lock) cannot be pickled" in locked.traceback, locked.traceback
    assert "Pass something picklable" in locked.traceback
