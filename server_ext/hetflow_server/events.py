"""Publish/subscribe of task state changes and log lines, inside the engine's event loop."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from typing import Any

Event = dict[str, Any]
Listener = Callable[[Event], None]

log = logging.getLogger(__name__)


class Events:
    def __init__(self) -> None:
        self._all: list[Listener] = []
        self._by_task: dict[str, list[Listener]] = defaultdict(list)

    def subscribe(self, listener: Listener, task_id: str | None = None) -> Callable[[], None]:
        """Listen to every event, or to one task's; returns the function that stops listening."""
        group = self._all if task_id is None else self._by_task[task_id]
        group.append(listener)

        def unsubscribe() -> None:
            if listener in group:
                group.remove(listener)
            if task_id is not None and not group:
                self._by_task.pop(task_id, None)

        return unsubscribe

    def forget(self, task_id: str) -> None:
        """Drop a finished task's listeners: nothing more will be said of it."""
        self._by_task.pop(task_id, None)

    def publish(self, event: Event) -> None:
        """To every listener, and to those of the event's task (or of each of its `tasks`), once each."""
        tasks = event.get("tasks") or [event["task"]]
        for listener in dict.fromkeys([*self._all, *(f for t in tasks for f in self._by_task.get(t, ()))]):
            try:
                listener(event)
            except Exception:  # one broken listener must not stop the others
                log.exception("hetflow event listener failed")
