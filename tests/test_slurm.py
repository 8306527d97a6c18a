"""Slurm and SSH executors against the real cluster and sshd of `scripts/services.sh`, as the non-root user.

Packing: the tasks of a foreach go out as one launch (one sbatch of a job array, one process over SSH) whose
elements take them from the pack's queue; each task keeps its own log, outcome, retry and cancel."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster import STATE, link_bytes, services, ssh

from kernels import Kernel
from servers import JupyterServer, notebook_kernel_fixture
from workflows import escaping_child, foreach_with_failing_elements, rerun_reruns_only_the_failed

TICKS = "import time\nfor i in range(4):\n    print('tick', i, flush=True)\n    time.sleep(0.5)\n"


def executors(cluster: dict[str, str], root: Path) -> dict[str, dict]:
    over_ssh = {
        "host": cluster["HETFLOW_SSH_HOST"],
        "port": int(cluster["HETFLOW_SSH_PORT"]),
        "user": cluster["HETFLOW_SSH_USER"],
        "credential": "cluster-key",
        "known_hosts": cluster["HETFLOW_SSH_KNOWN_HOSTS"],
        "python": cluster["HETFLOW_REMOTE_PYTHON"],
        "remote_root": "~/.hetflow-tests",
        "poll_interval": 0.1,
    }
    root.mkdir(parents=True, exist_ok=True)
    empty_known_hosts = root / "empty_known_hosts"
    empty_known_hosts.write_text("")
    return {
        "local": {"kind": "local"},
        "slurm": {"kind": "slurm", **over_ssh},
        "ssh": {"kind": "ssh", **over_ssh},
        "slurm-login": {
            "kind": "slurm",
            "host": "localhost",
            "python": sys.executable,
            "remote_root": str(root / "login-node"),
            "poll_interval": 0.1,
        },
        "slurm-unknown-host": {"kind": "slurm", **over_ssh, "known_hosts": str(empty_known_hosts)},
        "slurm-wrong-key": {"kind": "slurm", **over_ssh, "credential": "other-key"},
        "slurm-old-python": {"kind": "slurm", **over_ssh, "python": "/usr/bin/python3"},
        "slurm-setup": {"kind": "slurm", **over_ssh, "setup": ["export HETFLOW_SITE=from-setup"]},
        "slurm-forbidden": {"kind": "slurm", **over_ssh, "remote_root": "/opt/hetflow-forbidden"},
        # polls so rarely that only what the follower pushes can bring a task back in time
        "slurm-warm": {"kind": "slurm", **over_ssh, "poll_interval": 30, "keep_alive": 5},
        "slurm-keep": {"kind": "slurm", **over_ssh, "keep_alive": 60},
    }


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, str]]:
    """The cluster, with no job left over from an earlier run (jobs outlive the engines that submit them)."""
    found = services()
    ssh(found, "scancel -u $USER; true")
    yield found
    ssh(found, "scancel -u $USER; true")


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory both root (the tests) and the test user (the jobs) can write."""
    path = tmp_path_factory.mktemp("shared")
    os.chmod(path, 0o777)
    for parent in path.parents:
        if str(parent).startswith("/tmp/"):
            os.chmod(parent, os.stat(parent).st_mode | 0o005)
    return path


def start_server(root: Path, cluster: dict[str, str]) -> JupyterServer:
    server = JupyterServer(
        root, hetflow={"executors": executors(cluster, root)}, env={"SLURM_CONF": cluster["SLURM_CONF"]}
    )
    key = Path(cluster["HETFLOW_SSH_KEY"]).read_text()
    server.json("PUT", "hetflow/api/credentials/cluster-key", {"kind": "ssh-key", "fields": {"private_key": key}})
    other = root / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    server.json(
        "PUT", "hetflow/api/credentials/other-key", {"kind": "ssh-key", "fields": {"private_key": other.read_text()}}
    )
    return server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, cluster: dict[str, str]) -> Iterator[JupyterServer]:
    s = start_server(tmp_path_factory.mktemp("slurm-server"), cluster)
    yield s
    s.stop()


kernel = notebook_kernel_fixture("cluster.ipynb")


def running_task(server: JupyterServer, name: str, timeout: float = 30) -> dict:
    """The task once it runs (it may not exist yet when the cell was only just sent)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, _, data = server.request("GET", f"hetflow/api/tasks/{name}")
        if status == 200 and json.loads(data)["task"]["state"] == "running":
            return json.loads(data)["task"]
        time.sleep(0.1)
    raise AssertionError(f"task {name} did not start")


def squeue(cluster: dict[str, str]) -> str:
    return ssh(cluster, "squeue -h -o '%i %j %T'")


def assert_streamed(out) -> None:
    ticks = [o.time for o in out.outputs if o.msg_type == "stream" and "tick" in o.content["text"]]
    assert ticks and out.outputs[-1].time - ticks[0] > 0.8, "log lines arrived only at the end"
    assert "tick 0" in out.stdout and "tick 3" in out.stdout


def test_slurm_cell_over_ssh_returns_its_value_and_streams_its_log(kernel: Kernel, cluster: dict[str, str]) -> None:
    kernel.run("offset = 40").check()
    out = kernel.run(
        f"%%remote executor=slurm partition=debug time=00:05:00 cpus_per_task=1 cache=false\n{TICKS}"
        "import getpass, os\nwho = getpass.getuser()\njob = os.environ['SLURM_JOB_ID']\nanswer = offset + 2\n"
    ).check()
    assert_streamed(out)
    assert kernel.value("[who, answer]") == [cluster["HETFLOW_SSH_USER"], 42]
    assert kernel.value("job").isdigit()


def test_ssh_executor_runs_the_cell_on_the_host(kernel: Kernel, cluster: dict[str, str]) -> None:
    out = kernel.run(f"%%remote executor=ssh cache=false\n{TICKS}import getpass\nsshwho = getpass.getuser()\n").check()
    assert_streamed(out)
    assert kernel.value("sshwho") == cluster["HETFLOW_SSH_USER"]


def test_remote_exception_shows_the_cells_line_numbers(kernel: Kernel) -> None:
    out = kernel.run("%%remote executor=slurm cache=false\nvalues = {}\nmissing = values['key']\n")
    assert not out.ok
    assert "KeyError: 'key'" in out.traceback and ", line 3, in <module>" in out.traceback
    assert "missing = values['key']" in out.traceback


def test_a_bad_partition_fails_with_slurms_own_message(kernel: Kernel) -> None:
    out = kernel.run("%%remote executor=slurm partition=nosuchpartition cache=false\nx = 1\n")
    assert not out.ok
    assert "sbatch refused the job" in out.traceback and "invalid partition" in out.traceback.lower()


def test_bad_slurm_option_values_are_refused_before_submission(kernel: Kernel) -> None:
    out = kernel.run("%%remote executor=slurm time=soon\nx = 1\n")
    assert "time=soon: Slurm's time format" in out.stderr
    out = kernel.run("%%remote executor=slurm colour=blue\nx = 1\n")
    assert "unknown option 'colour' for a slurm executor" in out.stderr


def test_cancel_from_the_kernel_leaves_no_job_in_squeue(kernel: Kernel, server: JupyterServer, cluster) -> None:
    msg_id, execution = kernel.start("%%remote executor=slurm name=doomed cache=false\nimport time\ntime.sleep(120)\n")
    job_id = running_task(server, "doomed")["handle"]["job_id"]
    assert job_id in squeue(cluster)
    kernel.interrupt()
    kernel.collect(msg_id, execution)
    assert "is cancelled" in kernel.run("%remote cancel doomed").check().stdout
    deadline = time.monotonic() + 20
    while job_id in squeue(cluster):
        assert time.monotonic() < deadline, squeue(cluster)
        time.sleep(0.2)


@pytest.mark.parametrize("executor", ["slurm", "ssh"])
def test_a_timeout_stops_the_code_on_the_cluster(
    kernel: Kernel, server: JupyterServer, cluster: dict[str, str], shared: Path, executor: str
) -> None:
    """timeout=2 on a cell that would write a marker after 4 s, and starts a process in its own session that would
    write another: the task fails saying so, neither marker appears (looked for 2 s past when they would have been
    written), and on Slurm the job leaves squeue."""
    marker, name = shared / f"timeout-{executor}", f"overdue-{executor}"
    escaped = shared / f"timeout-{executor}-child"
    out = kernel.run(
        f"%%remote executor={executor} name={name} cache=false timeout=2\n{escaping_child(escaped, 4)}import time\n"
        f"time.sleep(4)\nopen({str(marker)!r}, 'w').write('the code ran on')\nlate = 1\n"
    )
    stopped = time.monotonic()
    assert not out.ok and "ran longer than timeout=2 s and was stopped" in out.traceback, out.traceback
    task = server.json("GET", f"hetflow/api/tasks/{name}")["task"]
    assert task["state"] == "failed" and task["error"]["type"] == "TimeoutError", task["error"]
    if executor == "slurm":
        wait_until(lambda: task["handle"]["job_id"] not in squeue(cluster), what="the job to leave squeue")
    time.sleep(max(0.0, stopped + 4 - time.monotonic()))  # the code started ≥ 2 s before it was stopped
    assert not marker.exists(), f"the {executor} task's code ran on after its timeout"
    assert not escaped.exists(), f"a child the {executor} task started in its own session outlived the timeout"


def test_a_job_killed_by_slurm_fails_with_the_reason_and_is_retried(
    kernel: Kernel, server: JupyterServer, cluster
) -> None:
    marker = f"/tmp/hetflow-killed-{os.getpid()}"
    cell = (
        "%%remote executor=slurm name=killed retries=1 cache=false\nimport os, time\n"
        f"first = not os.path.exists({marker!r})\nopen({marker!r}, 'a').write('x')\n"
        "if first:\n    time.sleep(120)\nsurvived = 'second attempt'\n"
    )
    msg_id, execution = kernel.start(cell)
    task = running_task(server, "killed")
    ssh(cluster, f"scancel {task['handle']['job_id']}")
    out = kernel.collect(msg_id, execution, timeout=120).check()
    assert kernel.value("survived") == "second attempt"
    history = server.json("GET", "hetflow/api/tasks/killed")["events"]
    assert any("ended as CANCELLED" in (e["message"] or "") for e in history), history
    assert out.ok
    ssh(cluster, f"rm -f {marker}")


def test_login_node_mode_runs_slurm_commands_locally(kernel: Kernel) -> None:
    kernel.run(
        "%%remote executor=slurm-login cache=false\nimport getpass, os\n"
        "localwho, job = getpass.getuser(), os.environ.get('SLURM_JOB_ID')\n"
    ).check()
    assert kernel.value("localwho") == "root"  # no SSH: the server's own user, through its local sbatch
    assert kernel.value("job").isdigit()


def test_an_unknown_host_key_is_refused(kernel: Kernel) -> None:
    out = kernel.run("%%remote executor=slurm-unknown-host cache=false\nx = 1\n")
    assert "host key of 127.0.0.1" in out.traceback and "is unknown" in out.traceback


def test_a_refused_key_is_a_clear_error(kernel: Kernel) -> None:
    out = kernel.run("%%remote executor=slurm-wrong-key cache=false\nx = 1\n")
    assert "refused the credential's key" in out.traceback and "check the executor's credential" in out.traceback


def test_a_remote_python_without_matching_cloudpickle_is_reported(kernel: Kernel) -> None:
    out = kernel.run("%%remote executor=slurm-old-python cache=false\nx = 1\n")
    assert "does not match the engine" in out.traceback and "cloudpickle missing there" in out.traceback


def test_setup_lines_run_before_the_task(kernel: Kernel) -> None:
    kernel.run("%%remote executor=slurm-setup cache=false\nimport os\nsite = os.environ.get('HETFLOW_SITE')\n").check()
    assert kernel.value("site") == "from-setup"


def test_a_remote_root_without_permission_is_a_clear_error(kernel: Kernel) -> None:
    out = kernel.run("%%remote executor=slurm-forbidden cache=false\nx = 1\n")
    assert "cannot create /opt/hetflow-forbidden" in out.traceback and "Permission denied" in out.traceback


def restart_sshd(cluster: dict[str, str]) -> None:
    subprocess.run(
        ["bash", str(Path(__file__).parent.parent / "scripts" / "services.sh"), "restart-sshd"],
        check=True,
        capture_output=True,
        env={**os.environ, "HETFLOW_SERVICES": str(STATE)},
    )
    # restarting the listener leaves open sessions alone: end ours too, so that the engine must reconnect
    subprocess.run(["pkill", "-KILL", "-u", cluster["HETFLOW_SSH_USER"], "-f", "^sshd: "], check=True)


@pytest.mark.parametrize("foreach", ["", "foreach=n:range(3)"])
def test_sshd_restarted_mid_run_the_task_still_completes(
    kernel: Kernel, server: JupyterServer, cluster: dict[str, str], foreach: str
) -> None:
    """One task, and a pack of three."""
    msg_id, execution = kernel.start(
        f"%%remote executor=slurm name=through cache=false {foreach}\n{TICKS}through = 'ok'\n"
    )
    running_task(server, "through")
    restart_sshd(cluster)
    kernel.collect(msg_id, execution, timeout=90).check()
    assert kernel.value("through") == (["ok"] * 3 if foreach else "ok")


@contextlib.contextmanager
def own_server(tmp_path: Path, cluster: dict[str, str]) -> Iterator[tuple[JupyterServer, Kernel]]:
    """A server of the test's own (it gets killed), and a kernel that outlives it."""
    server = start_server(tmp_path / "server", cluster)
    outside = server.outside_kernel(tmp_path / "kernel")
    try:
        yield server, outside
    finally:
        outside.shutdown()
        server.stop()


def store_is_free(server: JupyterServer) -> bool:
    """No process holds the engine's lock on the store (what a new engine must take to start)."""
    with open(server.store / "engine.lock", "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(lock, fcntl.LOCK_UN)
        return True


def run_through_an_engine_kill(server: JupyterServer, outside: Kernel, cell: str, started: Path) -> None:
    """The cell, with the engine SIGKILLed and started again once `started` exists (its code runs)."""
    running = outside.start(cell)
    wait_until(started.exists, what="the task to run")
    server.kill()
    wait_until(lambda: store_is_free(server), timeout=10, what="the killed engine's store lock to be released")
    server.start()
    outside.collect(*running, timeout=120).check()


def test_engine_killed_mid_job_reattaches_and_the_job_ran_once(
    tmp_path: Path, cluster: dict[str, str], shared: Path
) -> None:
    runs = shared / "runs.txt"
    with own_server(tmp_path, cluster) as (server, outside):
        cell = (
            f"%%remote executor=slurm name=survivor cache=false\nopen({str(runs)!r}, 'a').write('run\\n')\n"
            f"{TICKS}survivor = 'done'\n"
        )
        run_through_an_engine_kill(server, outside, cell, runs)
        assert outside.value("survivor") == "done"
        assert runs.read_text() == "run\n", "the job ran more than once"
        history = server.json("GET", "hetflow/api/tasks/survivor")["events"]
        assert any("re-attaching" in (e["message"] or "") for e in history)


def test_a_retry_on_slurm_runs_again_and_does_not_reuse_the_failed_attempts_outcome(kernel: Kernel, cluster) -> None:
    marker = f"/tmp/hetflow-retry-{os.getpid()}"
    out = kernel.run(
        "%%remote executor=slurm name=twice retries=1 cache=false\nimport os\n"
        f"first = not os.path.exists({marker!r})\nopen({marker!r}, 'a').write('x')\n"
        "if first:\n    raise RuntimeError('first attempt fails')\nsecond = 'ran'\n"
    ).check()
    assert kernel.value("second") == "ran" and out.ok
    assert ssh(cluster, f"cat {marker}; rm -f {marker}") == "xx"


# --------------------------------------------------------------------------- packing


def elements(server: JupyterServer, name: str) -> list[dict]:
    """The tasks of the newest foreach called `name`, in element order."""
    tasks = [t for t in server.json("GET", "hetflow/api/tasks")["tasks"] if t["name"] == name]
    if not tasks:
        return []
    newest = max(tasks, key=lambda t: t["created"])["group_id"]
    return sorted((t for t in tasks if t["group_id"] == newest), key=lambda t: t["element"])


def wait_until(condition, timeout: float = 30, what: str = "the condition") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_a_foreach_is_one_sbatch_and_its_results_come_back_in_order_each_with_its_own_log(
    kernel: Kernel, server: JupyterServer
) -> None:
    kernel.run(
        "%%remote executor=slurm name=packed cache=false foreach=k:range(6)\nimport os\n"
        "print('element', k, flush=True)\nlaunch = os.environ.get('SLURM_ARRAY_JOB_ID') or os.environ['SLURM_JOB_ID']\n"
        "square = k * k\n"
    ).check()
    assert kernel.value("square") == [k * k for k in range(6)]
    launches = kernel.value("launch")
    assert len(set(launches)) == 1, f"the foreach went out as more than one sbatch: {launches}"
    tasks = elements(server, "packed")
    assert {t["handle"]["job_id"] for t in tasks} == {launches[0]}
    for k, task in enumerate(tasks):
        log = server.request("GET", f"hetflow/api/tasks/{task['id']}/logs")[2].decode()
        assert log == f"element {k}\n", (k, log)
    status = kernel.run("%remote status").check().stdout
    assert f"job {launches[0]}_" in status and " on vm" in status, status  # the element and node that ran each


def test_one_failing_element_leaves_the_others_and_a_rerun_runs_only_it(kernel: Kernel, shared: Path) -> None:
    runs, fixed = shared / "pack-runs", shared / "pack-fixed"
    foreach_with_failing_elements(kernel, runs, fixed, "executor=slurm cache=false", 4, (2,))
    rerun_reruns_only_the_failed(kernel, runs, fixed, 4, (2,))


def test_stopping_one_task_of_a_pack_stops_its_code_and_lets_the_others_finish(
    kernel: Kernel, server: JupyterServer, shared: Path, cluster: dict[str, str]
) -> None:
    """A task that runs past its timeout is stopped alone (the executor cancels that one task of the pack, while
    others of the pack still run or wait)."""
    marks = shared / "pack-cancel"
    cell = (
        "%%remote executor=slurm name=trio cache=false timeout=4 foreach=n:range(4) wait=false\nimport time\n"
        f"beat = {str(marks)!r} + f'-{{n}}'\n"
        "for _ in range(15 if n != 1 else 600):\n    open(beat, 'a').write('.')\n    time.sleep(0.2)\nslept = n\n"
    )
    kernel.run(cell).check()  # two run at once (2 CPUs): when 1 is stopped, 2 runs and 3 waits for a CPU
    wait_until(
        lambda: [t["state"] for t in elements(server, "trio")] == ["completed", "failed", "completed", "completed"],
        what=f"{[(t['state'], t['error']) for t in elements(server, 'trio')]}",
    )
    stopped = elements(server, "trio")[1]
    assert "timeout=4" in stopped["error"]["message"], stopped["error"]
    beat = Path(f"{marks}-1")
    beats = beat.stat().st_size
    time.sleep(1)
    assert beat.stat().st_size == beats, "the stopped task's code ran on"
    wait_until(lambda: stopped["handle"]["job_id"] not in squeue(cluster), what="the pack's job to leave squeue")


def test_an_allocation_cancelled_from_outside_fails_its_tasks_and_their_retries_run(
    kernel: Kernel, server: JupyterServer, cluster: dict[str, str], shared: Path
) -> None:
    hold = shared / "pack-hold"
    hold.touch()
    msg_id, execution = kernel.start(
        "%%remote executor=slurm name=evicted cache=false retries=1 foreach=n:range(3)\nimport os, time\n"
        f"while os.path.exists({str(hold)!r}):\n    time.sleep(0.1)\nsurvived = n\n"
    )
    wait_until(lambda: any(t["state"] == "running" for t in elements(server, "evicted")), what="a task to run")
    job_id = elements(server, "evicted")[0]["handle"]["job_id"]
    ssh(cluster, f"scancel {job_id}")
    wait_until(lambda: job_id not in squeue(cluster), what="the allocation to leave squeue")
    hold.unlink()
    kernel.collect(msg_id, execution, timeout=90).check()
    assert kernel.value("survived") == [0, 1, 2]
    tasks = elements(server, "evicted")
    assert all(t["attempts"] == 2 for t in tasks), [t["attempts"] for t in tasks]
    history = [e["message"] or "" for t in tasks for e in server.json("GET", f"hetflow/api/tasks/{t['id']}")["events"]]
    assert any("ended as CANCELLED" in m for m in history), history


def test_a_task_whose_timeout_does_not_fit_in_the_time_limit_is_not_started_and_says_why(kernel: Kernel) -> None:
    out = kernel.run("%%remote executor=slurm time=00:01:00 timeout=120 cache=false\nnever = 1\n")
    assert not out.ok
    assert "before the task started" in out.traceback and "does not fit" in out.traceback, out.traceback


def test_a_pack_that_reaches_its_time_limit_fails_the_task_it_was_running_with_slurms_reason(
    kernel: Kernel, server: JupyterServer, cluster: dict[str, str]
) -> None:
    """Slurm's own TIMEOUT kill (time=1 minute, checked by slurmctld about every 30 s): the element's task fails
    saying so, the other element's task completed, and nothing waits on the dead job."""
    msg_id, execution = kernel.start(
        "%%remote executor=slurm name=overrun cache=false time=00:01:00 foreach=n:range(2)\nimport time\n"
        "while n == 1:\n    print('still here', flush=True)\n    time.sleep(1)\nfinished = n\n"
    )
    out = kernel.collect(msg_id, execution, timeout=180)
    assert not out.ok
    first, second = elements(server, "overrun")
    assert first["state"] == "completed" and second["state"] == "failed", (first["state"], second["state"])
    message = second["error"]["message"]
    assert "ended as TIMEOUT" in message and "time limit" in message, message
    wait_until(lambda: second["handle"]["element"] not in squeue(cluster), what="the timed-out element to go")


def test_a_large_input_read_by_a_foreach_and_two_later_cells_crosses_the_ssh_link_once(
    kernel: Kernel, cluster: dict[str, str]
) -> None:
    """Measured on the link (the TCP counters of the engine's SSH connection): 10 reads of an 8 MB input, which
    moved 10x its size when every task carried its inputs."""
    kernel.run("import os\nbig = os.urandom(8 << 20)\n").check()
    kernel.run("%%remote executor=slurm cache=false\nwarm = 1\n").check()  # the link open, the runner shipped
    before = link_bytes(cluster)
    kernel.run("%%remote executor=slurm cache=false foreach=k:range(8)\nsize = len(big) + k\n").check()
    assert kernel.value("size") == [(8 << 20) + k for k in range(8)]
    for extra in (1, 2):
        kernel.run(f"%%remote executor=slurm cache=false\nlater = len(big) + {extra}\n").check()
    moved = link_bytes(cluster) - before
    assert moved <= 1.5 * (8 << 20), f"{moved / (8 << 20):.2f}x the input's size crossed the link"
    assert ssh(cluster, "ls ~/.hetflow-tests/blobs").split(), "the blob store is empty"
    cleaned = kernel.run("%remote clean slurm").check().stdout
    assert "blobs removed" in cleaned and ssh(cluster, "ls ~/.hetflow-tests/blobs").split() == [], cleaned
    refused = kernel.run("%remote clean local")
    assert "keeps no blob store" in refused.stderr + refused.traceback, (refused.stderr, refused.traceback)


def test_a_compressible_input_crosses_the_link_compressed(kernel: Kernel, cluster: dict[str, str]) -> None:
    kernel.run("import os\nzeros = bytes(8 << 20) + os.urandom(16)\n").check()
    kernel.run("%%remote executor=slurm cache=false\nwarm = 1\n").check()
    before = link_bytes(cluster)
    kernel.run("%%remote executor=slurm cache=false\nzeros_read = len(zeros)\n").check()
    moved = link_bytes(cluster) - before
    assert kernel.value("zeros_read") == (8 << 20) + 16
    assert moved <= 0.1 * (8 << 20), f"{moved / (8 << 20):.2f}x the input's size crossed the link"


def test_a_large_result_read_by_the_next_cell_on_the_cluster_never_crosses_the_link(
    kernel: Kernel, cluster: dict[str, str]
) -> None:
    """The first cell's output is a future the kernel never reads: it stays in the cluster's blob store and the
    second cell reads it there."""
    kernel.run("%%remote executor=slurm cache=false\nwarm = 1\n").check()
    before = link_bytes(cluster)
    kernel.run("%%remote executor=slurm cache=false wait=false\nimport os\nproduced = os.urandom(8 << 20)\n").check()
    kernel.run("%%remote executor=slurm cache=false\nreduced = sum(produced[:1000])\n").check()
    moved = link_bytes(cluster) - before
    assert moved <= 0.2 * (8 << 20), f"{moved / (8 << 20):.2f}x the result's size crossed the link"
    assert isinstance(kernel.value("reduced"), int)


def test_an_ssh_foreach_runs_as_one_process_in_parallel(kernel: Kernel) -> None:
    out = kernel.run(
        "%%remote executor=ssh cache=false foreach=n:range(4)\nimport os, time\ntime.sleep(1)\ndriver = os.getppid()\n"
    ).check()
    assert len(set(kernel.value("driver"))) == 1, "the foreach ran as more than one process"
    assert out.duration < 3.5, f"{out.duration:.1f} s: the 4 one-second tasks did not run side by side"


# --------------------------------------------------------------------------- warm allocations, pushed outcomes


def test_a_warm_allocation_takes_the_next_cells_and_exits_once_idle(kernel: Kernel, cluster: dict[str, str]) -> None:
    """keep_alive=5 on an executor that polls every 30 s: each cell comes back at once (pushed by the follower),
    the second runs in the first one's job without a new sbatch, and the job leaves squeue once idle."""
    cell = "%%remote executor=slurm-warm cache=false\nimport os\nwarm_job = os.environ['SLURM_JOB_ID']\n"
    first = kernel.run(cell).check()
    job = kernel.value("warm_job")
    second = kernel.run(cell).check()
    assert kernel.value("warm_job") == job, "the second cell went out as a new sbatch"
    assert first.duration < 10 and second.duration < 2, (first.duration, second.duration)
    ended = time.monotonic()
    time.sleep(2)
    assert job in squeue(cluster), "the allocation did not wait for more tasks"
    wait_until(lambda: job not in squeue(cluster), timeout=15, what="the idle allocation to exit")
    assert time.monotonic() - ended >= 5 - 0.5
    third = kernel.run(cell).check()  # a new allocation, found closed and replaced
    assert kernel.value("warm_job") != job and third.duration < 10


def allocations(server: JupyterServer, executor: str) -> list[dict]:
    return server.json("GET", "hetflow/api/executors")["executors"][executor]["allocations"]


def test_a_warm_allocation_is_listed_and_cancelling_it_stops_its_job_and_fails_its_task(
    kernel: Kernel, server: JupyterServer, cluster: dict[str, str], shared: Path
) -> None:
    cell = "%%remote executor=slurm-keep cache=false\nimport os\nwarm_job = os.environ['SLURM_JOB_ID']\n"
    kernel.run(cell).check()
    job = kernel.value("warm_job")
    (listed,) = allocations(server, "slurm-keep")
    assert (listed["id"], listed["nodes"], listed["running"], listed["tasks"]) == (job, ["vm"], 0, 1), listed
    hold = shared / "allocation-hold"
    hold.touch()
    msg_id, execution = kernel.start(
        "%%remote executor=slurm-keep name=held cache=false\nimport os, time\n"
        f"held_in = os.environ['SLURM_JOB_ID']\nwhile os.path.exists({str(hold)!r}):\n    time.sleep(0.1)\n"
    )
    task = running_task(server, "held")
    assert task["handle"]["job_id"] == job, "the second cell did not go to the warm allocation"
    status, _, _ = server.request("DELETE", "hetflow/api/executors/slurm-keep/allocations/999999")
    assert status == 404
    answer = server.json("DELETE", f"hetflow/api/executors/slurm-keep/allocations/{job}")
    assert answer["name"] == "slurm-keep"
    wait_until(lambda: job not in squeue(cluster), what="the cancelled allocation to leave squeue")
    out = kernel.collect(msg_id, execution, timeout=60)
    hold.unlink()
    assert not out.ok and "ended as CANCELLED" in out.traceback, out.traceback
    wait_until(lambda: allocations(server, "slurm-keep") == [], what="the allocation to leave the list")
    kernel.run(cell).check()  # the next cell goes to a new allocation
    assert kernel.value("warm_job") != job


def test_engine_killed_while_a_warm_allocation_runs_tasks_each_finishes_exactly_once(
    tmp_path: Path, cluster: dict[str, str], shared: Path
) -> None:
    runs = shared / "warm-runs.txt"
    with own_server(tmp_path, cluster) as (server, outside):
        outside.run("%%remote executor=slurm-keep cache=false\nimport os\nwarm = os.environ['SLURM_JOB_ID']\n").check()
        job = outside.value("warm")
        cell = (
            "%%remote executor=slurm-keep name=survivors cache=false foreach=n:range(3)\nimport os\n"
            f"open({str(runs)!r}, 'a').write(f'run {{n}}\\n')\n{TICKS}ran_in = os.environ['SLURM_JOB_ID']\n"
        )
        run_through_an_engine_kill(server, outside, cell, runs)
        assert outside.value("ran_in") == [job] * 3, "a task left the warm allocation"
        assert sorted(runs.read_text().splitlines()) == ["run 0", "run 1", "run 2"], runs.read_text()
