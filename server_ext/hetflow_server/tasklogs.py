"""Task logs: the store's copy of what each running task prints, and the log events that carry it live.

Kept apart from the scheduler because a log is a file with its own life (opened at a task's first line, masked as it
streams, closed when the task ends) and its events carry byte offsets that clients resume from.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from .credentials import Credentials, StreamMasker
from .store import Store


class _TaskLog:
    """One task's log file: masked, appended as it streams in."""

    def __init__(self, path: Path, credentials: Credentials):
        self.masker = StreamMasker(credentials)
        self._file: IO[bytes] = open(path, "ab")  # noqa: SIM115 - open while the task runs
        self.size = self._file.tell()

    def write(self, text: str) -> tuple[int, str]:
        """Append; returns the byte offset where the shown (masked) text starts, and the text."""
        return self._append(self.masker.feed(text))

    def close(self) -> tuple[int, str]:
        offset, rest = self._append(self.masker.close())
        self._file.close()
        return offset, rest

    def _append(self, text: str) -> tuple[int, str]:
        offset = self.size
        data = text.encode("utf-8")
        self._file.write(data)
        self._file.flush()
        self.size += len(data)
        return offset, text


class TaskLogs:
    """The logs of tasks that are running, each open from its first line until the task ends."""

    def __init__(self, store: Store, credentials: Credentials, publish: Callable[[dict[str, Any]], None]):
        self.store, self.credentials = store, credentials
        self._publish = publish  # the scheduler's: a log event waits, as a state change does, for its commit
        self._open: dict[str, _TaskLog] = {}

    def write(self, task_id: str, stream: str, text: str) -> None:
        log = self._open.get(task_id)
        if log is None:
            log = self._open[task_id] = _TaskLog(self.store.log_path(task_id), self.credentials)
        self._publish_log(task_id, stream, *log.write(text))

    def close(self, task_id: str) -> None:
        """The task ended: what the masker still held back goes out, and the file is closed."""
        log = self._open.pop(task_id, None)
        if log is not None:
            self._publish_log(task_id, "stdout", *log.close())

    def _publish_log(self, task_id: str, stream: str, offset: int, text: str) -> None:
        """Log events carry their byte offset in the task's log, so a client that reconnects resumes exactly."""
        if text:
            self._publish({"type": "log", "task": task_id, "stream": stream, "text": text, "offset": offset})
