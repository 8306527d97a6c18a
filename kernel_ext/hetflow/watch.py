"""A kernel's view of running tasks (one cell's task, or every element of a foreach): the events meant for them,
in order, each log byte once, and their latest state."""

from __future__ import annotations

import base64
import queue
from collections.abc import Iterable
from typing import Any

from hetflow_server.models import Task

FINAL = ("completed", "failed", "cancelled")


class Watch:
    """Fed from the engine's thread or the event socket's; drained by the kernel's main thread.

    Log events carry their byte offset in their task's log: after a reconnect the missed range is fetched once and
    anything already shown is skipped. A state change short of the end (queued, running) is kept as the task's
    latest and wakes no one: the reader takes it at its next look (the status line's tick), so that a tight loop of
    sub-millisecond tasks hands the kernel's thread one event per task, not three.
    """

    def __init__(self, task_ids: Iterable[str] | None = None):
        self.events: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        self.offsets: dict[str, int] = {}  # bytes of each task's log delivered so far
        self.ended: set[str] = set()
        self.expected: set[str] | None = None  # None until the submission says which tasks to watch
        self.results: dict[str, bytes] = {}  # small results that came with the final events
        self.tasks: dict[str, Task] = {}  # the latest state of each task, as drained
        self._latest: dict[str, dict[str, Any]] = {}  # non-final task events not read yet, the latest per task
        self._questions: set[tuple[str, str]] = set()  # login questions passed on: (prompt id, open|closed)
        if task_ids is not None:
            self.expect(task_ids)

    def expect(self, task_ids: Iterable[str]) -> None:
        self.expected = set(task_ids)

    @property
    def done(self) -> bool:
        return self.expected is not None and self.expected <= self.ended

    def offset(self, task_id: str) -> int:
        return self.offsets.get(task_id, 0)

    def deliver(self, event: dict[str, Any]) -> None:
        if event["type"] == "prompt":  # a login question that holds up some of these tasks: once, however many
            key = (event["prompt"]["id"], event["state"])
            if key not in self._questions:
                self._questions.add(key)
                self.events.put(event)
            return
        task_id = event["task"]
        if task_id in self.ended or (self.expected is not None and task_id not in self.expected):
            return
        if event["type"] == "log":
            text, have = event["text"], self.offset(task_id)
            start = event.get("offset", have)
            data = text.encode("utf-8")
            if start + len(data) <= have:
                return
            if start < have:
                text = data[have - start :].decode("utf-8", errors="replace")
            self.offsets[task_id] = start + len(data)
            event = {**event, "text": text}
        final = event["type"] == "task" and event["state"] in FINAL
        if event["type"] == "task" and not final:
            self._latest[task_id] = event  # one dict store: atomic under the GIL, read by `_catch_up`
            return
        if final:
            if "result_b64" in event:
                self.results[task_id] = base64.b64decode(event["result_b64"])
            elif isinstance(event.get("result"), bytes):
                self.results[task_id] = event["result"]
        self.events.put(event)
        if final:  # only once its event is queued: a reader that sees `done` and an empty queue has had it
            self.ended.add(task_id)

    def next(self, timeout: float | None) -> dict[str, Any] | None:
        """The next event (None when none came within the timeout: the latest states are read then); task events
        update `tasks`."""
        try:
            event = self.events.get(timeout=timeout) if timeout else self.events.get_nowait()
        except queue.Empty:
            self._catch_up()
            return None
        if event["type"] == "task":
            self._latest.pop(event["task"], None)  # older than this final state
            self.tasks[event["task"]] = Task.from_json(event["data"])
        return event

    def _catch_up(self) -> None:
        for task_id in list(self._latest):
            event = self._latest.pop(task_id, None)
            if event is not None and task_id not in self.ended:
                self.tasks[task_id] = Task.from_json(event["data"])

    def drain(self) -> None:
        """Catch up with every event so far without waiting (log lines are dropped: nobody shows them)."""
        while self.next(None) is not None:
            pass
