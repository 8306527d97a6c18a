"""Timeouts, cancel, retries and the %remote line commands, through a real kernel."""

from __future__ import annotations

import time
from pathlib import Path

from kernels import Kernel
from workflows import escaping_child


def test_timeout_fails_a_sleeping_task_in_about_a_second_and_stops_what_it_started(kernel: Kernel) -> None:
    marker = kernel.root / "escaped-the-timeout.txt"
    out = kernel.run(f"%%remote timeout=1 name=sleepy\n{escaping_child(marker, 2)}import time\ntime.sleep(10)\n")
    assert not out.ok
    assert "TimeoutError" in out.traceback and "timeout=1" in out.traceback
    assert 0.9 < out.duration < 3.0, out.duration
    time.sleep(max(0.0, 2.5 - out.duration))
    assert not marker.exists(), "a child the task started in its own session outlived the timeout"
    # the worker that was killed is replaced: the next task runs at once
    assert kernel.run("%%remote\nafter_timeout = 1").check().duration < 2.0


def test_interrupt_detaches_and_cancel_stops_the_task(kernel: Kernel) -> None:
    marker = kernel.root / "cancelled-task-finished.txt"
    msg_id, execution = kernel.start(
        f"%%remote name=long\nimport time\ntime.sleep(3)\nopen({str(marker)!r}, 'w').write('done')\n"
    )
    time.sleep(1.0)
    kernel.interrupt()
    out = kernel.collect(msg_id, execution)
    assert not out.ok
    assert "keeps running" in out.traceback and "%remote cancel long" in out.traceback
    assert "running" in kernel.run("%remote status").check().stdout.split("long")[1].splitlines()[0]
    assert "cancelled" in kernel.run("%remote cancel long").check().stdout
    time.sleep(3.0)
    assert not marker.exists(), "the cancelled task kept running"
    status = kernel.run("%remote status").check().stdout
    assert next(line for line in status.splitlines() if " long " in line).split()[3] == "cancelled"
    assert "is cancelled" in kernel.run("%remote cancel long").check().stdout  # idempotent


def test_interrupted_task_result_can_be_fetched_when_done(kernel: Kernel) -> None:
    msg_id, execution = kernel.start("%%remote name=detached\nimport time\ntime.sleep(1.5)\nlate = 'value'\n")
    time.sleep(0.5)
    kernel.interrupt()
    assert not kernel.collect(msg_id, execution).ok
    early = kernel.run("%remote result detached")
    assert "is running" in early.stderr
    time.sleep(1.5)
    kernel.run("fetched = %remote result detached").check()
    assert kernel.value("fetched['late']") == "value"


def test_retries_run_a_failing_task_again_until_it_succeeds(kernel: Kernel) -> None:
    counter = kernel.root / "attempts.txt"
    out = kernel.run(
        "%%remote retries=2 name=flaky\n"
        f"with open({str(counter)!r}, 'a') as fh:\n    fh.write('x')\n"
        f"if len(open({str(counter)!r}).read()) < 2:\n    raise RuntimeError('first attempt fails')\n"
        "flaky_ok = True\n"
    ).check()
    assert counter.read_text() == "xx"
    assert kernel.value("flaky_ok") is True
    status = kernel.run("%remote status").check().stdout
    row = next(line for line in status.splitlines() if " flaky " in line).split()
    assert row[3:5] == ["completed", "2"]
    assert out.ok


def test_retries_exhausted_report_the_last_error(kernel: Kernel) -> None:
    out = kernel.run("%%remote retries=1 name=hopeless cache=false\nraise KeyError('always')\n")
    assert "after 2 attempt(s)" in out.traceback and "KeyError" in out.traceback


def test_logs_and_executors_commands(kernel: Kernel) -> None:
    kernel.run("%%remote name=chatty\nfor i in range(3):\n    print('chat', i)\n").check()
    assert kernel.run("%remote logs chatty").check().stdout == "chat 0\nchat 1\nchat 2\n"
    executors = kernel.run("%remote executors").check().stdout
    assert "local" in executors and "yes" in executors and "workers=2" in executors
    status = kernel.run("%remote status").check().stdout
    assert status.startswith("engine: embedded in this kernel")


def test_line_command_errors_are_one_line_usage_errors(kernel: Kernel) -> None:
    assert "UsageError: unknown command 'frobnicate'" in kernel.run("%remote frobnicate").stderr
    assert "no task has the id or name 'nosuch'" in kernel.run("%remote logs nosuch").stderr
    assert "name one task" in kernel.run("%remote cancel").stderr
    assert "Line commands" in kernel.run("%remote").check().stdout


def test_log_file_of_a_task_lives_in_the_store(kernel: Kernel) -> None:
    kernel.run("%%remote name=logged\nprint('kept on disk')").check()
    logs = list(Path(kernel.store, "logs").glob("*.log"))
    assert any(p.read_text() == "kept on disk\n" for p in logs)


def test_ten_one_second_tasks_submitted_one_by_one_spread_over_both_workers(kernel: Kernel) -> None:
    """The first free worker took the whole queue as its pack: 9 of the 10 ran on one worker, in 9.1 s."""
    pids = kernel.root / "balance-pids.txt"
    started = time.monotonic()
    cell = f"import os, time\nopen({str(pids)!r}, 'a').write(f'{{os.getpid()}}\\n')\ntime.sleep(1)\n"
    kernel.run(  # one after the other, as fast as cells can be submitted
        f"for i in range(10):\n    get_ipython().run_cell_magic('remote', f'wait=false cache=false name=even{{i}}',"
        f" {cell!r} + f'even{{i}} = {{i}}')"
    ).check()
    assert kernel.run(f"sum([{', '.join(f'even{i}' for i in range(10))}])").check().result == "45"
    elapsed = time.monotonic() - started
    ran = pids.read_text().split()
    print(f"\n10 one-second tasks submitted one by one on 2 workers: {elapsed:.2f} s, per worker {ran.count(ran[0])}")
    assert sorted(ran.count(pid) for pid in set(ran)) == [5, 5], ran
    assert elapsed <= 6.0, f"10 one-second tasks on 2 workers took {elapsed:.1f} s"


def test_an_idle_worker_takes_back_half_of_what_a_busy_one_has_not_begun(kernel: Kernel) -> None:
    """A foreach of three 1-second and three 0.1-second elements: packed before any was measured, one worker got
    the long ones (3 s of work) and the other was idle after 0.3 s."""
    pids = kernel.root / "steal-pids.txt"
    started = time.monotonic()
    kernel.run(
        "%%remote name=uneven foreach='k:[1, 1, 1, 0.1, 0.1, 0.1]' cache=false\nimport os, time\n"
        f"time.sleep(k)\nopen({str(pids)!r}, 'a').write(f'{{os.getpid()}} {{k}}\\n')\nslept = k\n"
    ).check()
    elapsed = time.monotonic() - started
    ran = [line.split() for line in pids.read_text().splitlines()]
    long_ones = {pid for pid, k in ran if k == "1"}
    print(f"\nuneven foreach on 2 workers: {elapsed:.2f} s; the 1-second elements ran on {len(long_ones)} worker(s)")
    assert len(long_ones) == 2, ran
    assert elapsed < 2.8, f"the foreach took {elapsed:.1f} s: the long elements stayed on one worker"
