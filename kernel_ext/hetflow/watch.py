"""A kernel's view of one running task: the events meant for it, in order, each log byte once."""

from __future__ import annotations

import base64
import queue
from typing import Any


class Watch:
    """Fed from the engine's thread or the event socket's; read by the cell that waits.

    Log events carry their byte offset in the task's log: after a reconnect the missed range is fetched once and
    anything already shown is skipped.
    """

    def __init__(self, task_id: str):
        self.task_id = task_id
        self.events: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        self.offset = 0  # bytes of the log delivered so far
        self.done = False
        self.result: bytes | None = None  # a small result that came with the final event

    def deliver(self, event: dict[str, Any]) -> None:
        if self.done:
            return
        if event["type"] == "log":
            text = event["text"]
            start = event.get("offset", self.offset)
            data = text.encode("utf-8")
            if start + len(data) <= self.offset:
                return
            if start < self.offset:
                text = data[self.offset - start :].decode("utf-8", errors="replace")
            self.offset = start + len(data)
            event = {**event, "text": text}
        elif event["type"] == "task" and event["state"] in ("completed", "failed", "cancelled"):
            self.done = True
            if "result_b64" in event:
                self.result = base64.b64decode(event["result_b64"])
            elif isinstance(event.get("result"), bytes):
                self.result = event["result"]
        self.events.put(event)
