"""Push, not poll: one long-lived command beside the batch system (`runner.py follow`, on the login node or the SSH
host) watches the running tasks' directories and prints each change as a JSON line the moment it sees it: a task's
start, its new log bytes, its outcome. A task in a warm allocation then comes back in tens of milliseconds instead
of at the next poll. The poll goes on beside it (slower) as the fallback: it alone sees a job the batch system
killed, and it carries on when the link drops, until the next submission starts the follower again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ..transport import Stream, Transport

log = logging.getLogger(__name__)


class Follower:
    def __init__(self, name: str, on_event: Callable[[dict[str, Any]], Awaitable[None]]):
        self.name = name
        self._on_event = on_event
        self._stream: Stream | None = None
        self._reader: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._stream is not None

    async def start(self, transport: Transport, command: str) -> bool:
        """Start the command unless it runs; True when it was (re)started (the caller names its tasks again)."""
        if self._stream is not None:
            return False
        self._stream = await transport.stream(command)
        self._reader = asyncio.get_running_loop().create_task(self._read(self._stream))
        return True

    def watch(self, task_id: str, base: str, offset: int) -> None:
        """Follow the task whose files are BASE.* (its log from `offset` on)."""
        if self._stream is not None:
            self._stream.send(f"watch {task_id} {base} {offset}")

    def forget(self, task_id: str) -> None:
        if self._stream is not None:
            self._stream.send(f"forget {task_id}")

    async def _read(self, stream: Stream) -> None:
        while (line := await stream.lines.get()) is not None:
            try:
                event = json.loads(line)
            except ValueError:  # not the follower's (a login banner): nothing to act on
                continue
            try:
                await self._on_event(event)
            except Exception:  # one bad event must not end the others
                log.exception("hetflow %s: a pushed event failed", self.name)
        if self._stream is stream:
            self._stream = None

    async def close(self) -> None:
        """Stop the command, and wait (briefly) for its end, so that nothing of it outlives the engine's loop."""
        stream, self._stream = self._stream, None
        if self._reader is not None:
            self._reader.cancel()
            self._reader = None
        if stream is not None:
            stream.close()
            if stream.reader is not None:
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await asyncio.wait_for(stream.reader, 2)
