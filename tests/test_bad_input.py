"""Bad input: a one-line error saying what to fix, raised before anything is submitted; the store keeps all."""

from __future__ import annotations

import pytest

from kernels import Kernel

CASES = [
    ("%%remote foo=1\nx = 1", "unknown option 'foo' for a local executor; options are:"),
    ("%%remote retries=abc\nx = 1", "retries=abc: expected a whole number"),
    ("%%remote retries=-1\nx = 1", "retries=-1: must be 0 or more"),
    ("%%remote timeout=-1\nx = 1", "timeout=-1: must be a positive number of seconds"),
    ("%%remote timeout=soon\nx = 1", "timeout=soon: expected seconds"),
    ("%%remote retries=9223372036854775808\nx = 1", "must be at most 1,000,000"),
    ("%%remote timeout=1e-9\nx = 1", "timeout=1e-9: must be between 0.01 s and 366 days"),
    ("%remote status extra args", "%remote status takes no arguments"),
    ("%remote logs", "%remote logs TASK: name one task"),
    ("%%remote foreach=k:[1, 2]\nx = k", "if it belongs to 'foreach', quote that option whole"),
    ("%%remote foreach=k:'abc'\nx = k", "quote the option whole, e.g. foreach=\"k:'abc'\""),
    ("import itertools", None),
    ("%%remote foreach=k:itertools.count()\nx = k", "has more than 100,000 elements (RemoteMagics.foreach_limit)"),
    ("%%remote cache=maybe\nx = 1", "cache=maybe: expected true or false"),
    ("%%remote executor=nowhere\nx = 1", "executor 'nowhere' is not configured (configured: local)"),
    ("%%remote retries\nx = 1", "'retries' is not a key=value option"),
    ("%%remote name=a name=b\nx = 1", "option 'name' is given twice"),
    ("%%remote name='unclosed\nx = 1", "cannot read the options"),
    ("%%remote\nx = 1\ny = (2\n", "syntax error in the cell, line 3"),
    ("%%remote inputs=ghost\nx = ghost", "inputs=ghost: ghost not defined"),
    ("import threading\nlk = threading.Lock()\n", None),
    ("%%remote\nwith lk:\n    x = 1", "input 'lk' (lock) cannot be pickled"),
]


@pytest.fixture(scope="module")
def seeded(kernel: Kernel) -> Kernel:
    kernel.run("%%remote name=seed\nseed = 1").check()
    return kernel


@pytest.mark.parametrize(("cell", "message"), CASES, ids=[c[0].split("\n")[0] + "|" + c[0][-12:] for c in CASES])
def test_bad_input_is_a_one_line_error_and_nothing_is_submitted(seeded: Kernel, cell: str, message: str) -> None:
    before = seeded.task_count()
    out = seeded.run(cell)
    if message is None:
        out.check()
        return
    assert not out.ok
    errors = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("UsageError: "), out.stderr + out.traceback
    assert message in errors[0]
    assert seeded.task_count() == before
    assert seeded.value("seed") == 1
    assert "seed" in seeded.run("%remote status").check().stdout
