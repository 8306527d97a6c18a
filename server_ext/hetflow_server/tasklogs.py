"""Task logs: the store's copy of what each running task prints, and the log events that carry it live.

Kept apart from the scheduler because a log is a file with its own life (opened at a task's first line, masked as it
streams, closed when the task ends) and its events carry byte offsets that clients resume from.

A log keeps at most the store's `log_limit` bytes (c.Hetflow.log_limit): its first nine tenths as the task prints
them, streamed to the cell and the sidebar, and its last tenth when the task ends, after a note of how much was left
out between them.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from .credentials import Credentials
from .runner import StreamMasker
from .store import Store

EVENT_TEXT = 2**20  # characters of log text in one event: 6 MiB of JSON at worst (\u escapes), under 10 MiB


class _TaskLog:
    """One task's log file: masked, appended as it streams in, and past `limit` bytes (0: no limit) cut in the
    middle: the first nine tenths stream and are stored as they come; of the rest only the last tenth is kept (in
    memory, masked), appended when the task ends with a note of what was left out: the end says why it failed."""

    def __init__(self, path: Path, credentials: Credentials, limit: int):
        self.masker = StreamMasker(credentials.secret_values)
        self._file: IO[bytes] = open(path, "ab")  # noqa: SIM115 - open while the task runs
        self.size = self._file.tell()
        self.head = limit - limit // 10 if limit else 0  # bytes streamed and stored as they come (0: all)
        self.tail_size = limit // 10
        self._tail: collections.deque[bytes] = collections.deque()  # the latest masked output past the head
        self._tail_bytes = 0
        self.left_out = 0  # bytes past the head the tail no longer holds

    def write(self, text: str) -> tuple[int, str]:
        """Append; returns the byte offset where the shown (masked) text starts, and the text."""
        return self._add(self.masker.feed(text).encode("utf-8"))

    def close(self) -> tuple[int, str]:
        offset, text = self._add(self.masker.close().encode("utf-8"))
        if self._tail:
            kept = b"".join(self._tail)
            excess = max(0, len(kept) - self.tail_size)
            while excess < len(kept) and kept[excess] & 0xC0 == 0x80:  # start on a whole character
                excess += 1
            self.left_out += excess
            if self.left_out:
                kept = (
                    f"\n[hetflow: log cut after {self.head / 2**20:g} MB (c.Hetflow.log_limit): {self.left_out:,} "
                    f"bytes of output left out here; its last {(len(kept) - excess) / 2**20:.2g} MB follow]\n"
                ).encode() + kept[excess:]
            offset, text = self._append(kept)
        self._file.close()
        return offset, text

    def _add(self, data: bytes) -> tuple[int, str]:
        """Within the head: stored and shown now. Past it: held in the tail, of which the oldest whole pieces go
        once the rest covers the tail's size."""
        if not self.head or (self.size + len(data) <= self.head and not self._tail):
            return self._append(data)
        offset, shown = self.size, ""
        if not self._tail:  # the head's last piece, cut on a character boundary
            room = data[: self.head - self.size].decode("utf-8", errors="ignore").encode("utf-8")
            offset, shown = self._append(room)
            data = data[len(room) :]
        if data:
            self._tail.append(data)
            self._tail_bytes += len(data)
        while len(self._tail) > 1 and self._tail_bytes - len(self._tail[0]) >= self.tail_size:
            gone = len(self._tail.popleft())
            self._tail_bytes -= gone
            self.left_out += gone
        return offset, shown

    def _append(self, data: bytes) -> tuple[int, str]:
        offset = self.size
        self._file.write(data)
        self._file.flush()
        self.size += len(data)
        return offset, data.decode("utf-8")


class TaskLogs:
    """The logs of tasks that are running, each open from its first line until the task ends."""

    def __init__(self, store: Store, credentials: Credentials, publish: Callable[[dict[str, Any]], None]):
        self.store, self.credentials = store, credentials
        self._publish = publish  # the scheduler's: a log event waits, as a state change does, for its commit
        self._open: dict[str, _TaskLog] = {}

    def write(self, task_id: str, stream: str, text: str) -> None:
        log = self._open.get(task_id)
        if log is None:
            log = self._open[task_id] = _TaskLog(self.store.log_path(task_id), self.credentials, self.store.log_limit)
        self._publish_log(task_id, stream, *log.write(text))

    def close(self, task_id: str) -> None:
        """The task ended: what the masker still held back goes out, and the file is closed."""
        log = self._open.pop(task_id, None)
        if log is not None:
            self._publish_log(task_id, "stdout", *log.close())

    def _publish_log(self, task_id: str, stream: str, offset: int, text: str) -> None:
        """Log events carry their byte offset in the task's log, so a client that reconnects resumes exactly; a
        large write goes out in events of at most EVENT_TEXT characters (one over a WebSocket's message limit,
        10 MiB in tornado, closed the kernel's socket)."""
        for start in range(0, len(text), EVENT_TEXT):
            part = text[start : start + EVENT_TEXT]
            self._publish({"type": "log", "task": task_id, "stream": stream, "text": part, "offset": offset})
            offset += len(part.encode("utf-8"))
