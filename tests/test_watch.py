"""The kernel's view of its tasks' events: a tight loop's task hands the kernel's thread one event (its end), not
one per state; the states short of the end are still there for the status line at its next tick."""

from __future__ import annotations

import collections
import threading

from hetflow.serverclient import ServerClient
from hetflow.watch import Watch
from hetflow_server.models import State, Task


def _event(task: Task, state: State) -> dict:
    task.state = state
    return {"type": "task", "task": task.id, "state": state.value, "data": task.to_json()}


def test_states_short_of_the_end_wake_no_one_and_are_read_at_the_next_tick() -> None:
    task = Task(id="t1", name="f", state=State.PENDING, executor="local", options={}, code="", inputs={}, outputs=[])
    watch = Watch(["t1"])
    watch.deliver(_event(task, State.QUEUED))
    watch.deliver(_event(task, State.RUNNING))
    assert watch.events.empty(), "a queued or running state woke the kernel's thread"
    assert watch.next(0.01) is None and watch.tasks["t1"].state is State.RUNNING  # the tick reads the latest
    watch.deliver(_event(task, State.COMPLETED))
    assert watch.done and watch.next(0.01)["state"] == "completed"
    watch.deliver(_event(task, State.RUNNING))  # late: changes nothing once it ended
    assert watch.next(0.01) is None and watch.tasks["t1"].state is State.COMPLETED


def test_a_resync_that_finds_the_task_ended_delivers_its_whole_log_before_the_end() -> None:
    """After a reconnect, the task may end between two requests: the log read before the state missed its last
    lines, and the final state then dropped the log events that carried them."""
    task = Task(id="t1", name="f", state=State.RUNNING, executor="local", options={}, code="", inputs={}, outputs=[])
    log = ["first\n"]

    def request(method: str, path: str) -> tuple[int, dict, bytes]:
        assert path.startswith("tasks/t1/logs?offset=")
        return 200, {}, "".join(log).encode()[int(path.rpartition("=")[2]) :]

    def call(method: str, path: str) -> dict:
        log.append("last\n")  # the task printed its last line and ended just now
        task.state = State.COMPLETED
        return {"task": task.to_json()}

    client = ServerClient.__new__(ServerClient)  # its HTTP calls played by the two functions above
    client._lock, client._early = threading.Lock(), collections.OrderedDict()
    client.request, client.call = request, call  # type: ignore[method-assign]
    watch = Watch(["t1"])
    client._watches = {"t1": watch}
    client._resync()
    seen = []
    while (event := watch.next(0.01)) is not None:
        seen.append(event.get("text") or event["state"])
    assert seen == ["first\nlast\n", "completed"]
