"""Task logs: the store's copy of what each running task prints, and the log events that carry it live.

Kept apart from the scheduler because a log is a file with its own life (opened at a task's first line, masked as it
streams, closed when the task ends) and its events carry byte offsets that clients resume from.

A log keeps at most the store's `log_limit` bytes (c.Hetflow.log_limit): what a task prints beyond it is counted, not
stored nor streamed (to the cell, the sidebar), and a note in the log says where it was cut and how much went.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from .credentials import Credentials, StreamMasker
from .store import Store

EVENT_TEXT = 2**20  # characters of log text in one event: 6 MiB of JSON at worst (\u escapes), under 10 MiB


class _TaskLog:
    """One task's log file: masked, appended as it streams in, cut at `limit` bytes (0: no limit)."""

    def __init__(self, path: Path, credentials: Credentials, limit: int):
        self.masker = StreamMasker(credentials)
        self._file: IO[bytes] = open(path, "ab")  # noqa: SIM115 - open while the task runs
        self.size = self._file.tell()
        self.limit = limit
        self.dropped = 0  # characters printed past the limit

    def write(self, text: str) -> tuple[int, str]:
        """Append; returns the byte offset where the shown (masked) text starts, and the text."""
        if self._full:
            self.dropped += len(text)  # not even masked: it is not kept
            return self.size, ""
        return self._append(self.masker.feed(text))

    def close(self) -> tuple[int, str]:
        rest = self.masker.close()
        if self._full:
            self.dropped += len(rest)
            rest = f"[hetflow: {self.dropped:,} more characters of output were not kept]\n" if self.dropped else ""
        offset, rest = self._append(rest)
        self._file.close()
        return offset, rest

    @property
    def _full(self) -> bool:
        return bool(self.limit) and self.size >= self.limit

    def _append(self, text: str) -> tuple[int, str]:
        offset = self.size
        data = text.encode("utf-8")
        if self.limit and not self._full and offset + len(data) > self.limit:  # cut here, on a character boundary
            kept = data[: self.limit - offset].decode("utf-8", errors="ignore")
            self.dropped += len(text) - len(kept)
            text = kept + (
                f"\n[hetflow: log truncated after {self.limit / 2**20:g} MB (c.Hetflow.log_limit); "
                "what the task printed after that is not kept]\n"
            )
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
