"""The kernel's view of its tasks' events: a tight loop's task hands the kernel's thread one event (its end), not
one per state; the states short of the end are still there for the status line at its next tick."""

from __future__ import annotations

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
