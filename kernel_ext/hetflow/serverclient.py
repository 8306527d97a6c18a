"""The kernel's client of an engine in a Jupyter server: HTTP for requests, one WebSocket for events.

Waiting is event driven: the socket pushes each state change and log line to the cell that waits. When the server
goes away the socket reconnects with backoff, re-reading the connection files (a restarted server has a new pid,
port or token), then re-synchronises every task a cell still waits for.
"""

from __future__ import annotations

import asyncio
import collections
import http.client
import json
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hetflow_server.models import Task, TaskSpec
from hetflow_server.protocol import TASK_MEDIA_TYPE, EngineUnreachable, NotFound, SpecError, StoreError, sha256

from .watch import FINAL, Watch

EARLY_EVENTS = 2000  # events for tasks whose submission has not returned yet


@dataclass(frozen=True)
class Connection:
    url: str  # the API root, ending in /hetflow/api/
    token: str
    source: str  # where it was found, for %remote status
    pid: int | None = None


class ServerClient:
    mode = "server"

    def __init__(self, connection: Connection, rediscover: Callable[[], Connection | None]):
        self.connection = connection
        self._rediscover = rediscover
        self._local = threading.local()
        self._lock = threading.Lock()
        self._watches: dict[str, Watch] = {}
        self._early: collections.OrderedDict[str, list[dict[str, Any]]] = collections.OrderedDict()
        self._connected = threading.Event()
        self._generation = 0
        self._closed = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="hetflow-events", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop)
        self._connected.wait(timeout=5)

    # --------------------------------------------------------------------------- HTTP

    def _http(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "url", None) != self.connection.url:
            parts = urllib.parse.urlsplit(self.connection.url)
            factory = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
            conn = factory(parts.hostname or "127.0.0.1", parts.port, timeout=300)
            self._local.conn, self._local.url = conn, self.connection.url
        return conn

    def request(
        self, method: str, path: str, body: bytes | None = None, content_type: str = "application/json"
    ) -> tuple[int, Any, bytes]:
        """One API call; on a dropped connection or a refused token, find the engine again and retry once."""
        for attempt in range(2):
            conn = self._http()
            target = urllib.parse.urlsplit(self.connection.url).path + path
            headers = {"Authorization": f"Bearer {self.connection.token}"}
            if body is not None:
                headers["Content-Type"] = content_type
            try:
                conn.request(method, target, body, headers)
                response = conn.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException):
                conn.close()  # a kept-alive connection to a server that went away: retry on a new one
                self._local.conn = None
                if attempt:
                    raise EngineUnreachable(
                        f"the hetflow engine at {self.connection.url} does not answer; is the Jupyter server running?"
                    ) from None
                self._refresh()
                continue
            except BaseException:
                conn.close()  # interrupted mid-request: the connection's state is unknown
                self._local.conn = None
                raise
            if response.status == 403 and not attempt and self._refresh():
                continue
            return response.status, response.headers, data
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def call(self, method: str, path: str, body: bytes | None = None, content_type: str = "application/json") -> Any:
        status, _, data = self.request(method, path, body, content_type)
        if status >= 400:
            raise _error(status, data)
        return json.loads(data) if data else None

    def _refresh(self) -> bool:
        """Re-read the connection files; true when they point somewhere new."""
        found = self._rediscover()
        if found is None or found == self.connection:
            return False
        self.connection = found
        return True

    # --------------------------------------------------------------------------- events

    async def _listen(self) -> None:
        from tornado.httpclient import HTTPRequest  # here: a kernel that only imports hetflow pays nothing for it
        from tornado.websocket import websocket_connect

        delay = 0.05
        while not self._closed:
            url = self.connection.url.replace("http", "ws", 1) + "events?results=inline"
            request = HTTPRequest(url, headers={"Authorization": f"Bearer {self.connection.token}"}, connect_timeout=5)
            try:
                socket = await websocket_connect(request)
            except Exception:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                await self._loop.run_in_executor(None, self._refresh)
                continue
            delay = 0.05
            with self._lock:
                self._generation += 1
            self._connected.set()
            await self._loop.run_in_executor(None, self._resync)
            while (message := await socket.read_message()) is not None:
                if isinstance(message, str):
                    self._dispatch(json.loads(message))
            self._connected.clear()

    def _dispatch(self, event: dict[str, Any]) -> None:
        targets = event["tasks"] if event["type"] == "prompt" else [event["task"]]
        watches: list[Watch] = []
        with self._lock:
            for task_id in targets:
                watch = self._watches.get(task_id)
                if watch is None:
                    self._early.setdefault(task_id, []).append(event)
                    while len(self._early) > EARLY_EVENTS:
                        self._early.popitem(last=False)
                elif watch not in watches:
                    watches.append(watch)
            if event["type"] == "task" and event["state"] in FINAL:
                self._watches.pop(event["task"], None)
        for watch in watches:
            watch.deliver(event)

    def _resync(self, only: list[Watch] | None = None) -> None:
        """After (re)connecting: deliver what a waiting cell missed while no socket was open."""
        with self._lock:
            watched = [(i, w) for i, w in self._watches.items() if only is None or w in only]
        for task_id, watch in watched:
            try:
                # the state before the log: a task that ended has its whole log by then, which its final state
                # (that drops later log events) must not overtake
                task = self.call("GET", f"tasks/{task_id}")["task"]
                offset = watch.offset(task_id)
                status, _, data = self.request("GET", f"tasks/{task_id}/logs?offset={offset}")
                if status == 200 and data:
                    text = data.decode("utf-8", errors="replace")
                    watch.deliver({"type": "log", "task": task_id, "stream": "stdout", "text": text, "offset": offset})
            except (EngineUnreachable, SpecError):
                continue
            if task["state"] in FINAL:
                self._dispatch(
                    {"type": "task", "task": task["id"], "state": task["state"], "message": None, "data": task}
                )

    # --------------------------------------------------------------------------- the client interface

    def submit(
        self, spec: TaskSpec, payload: bytes, elements: list[bytes] | None = None
    ) -> tuple[list[Task], bool, Watch | None]:
        self._connected.wait(timeout=5)
        generation = self._generation
        head = spec.to_json()
        if elements is not None:
            head["element_sizes"] = [len(e) for e in elements]
        body = b"".join([json.dumps(head).encode(), b"\n", payload, *(elements or [])])
        reply = self.call("POST", "tasks", body, TASK_MEDIA_TYPE)
        found = reply["tasks"] if "tasks" in reply else [reply["task"]]
        tasks = [Task.from_json({"code": spec.code, **t}) for t in found]
        if reply["cached"]:
            return tasks, True, None
        return tasks, False, self._watch([t.id for t in tasks if not t.state.final], generation)

    def watch(self, task_ids: list[str]) -> Watch:
        """Watch tasks already submitted (after a re-run)."""
        return self._watch(task_ids, -1)

    def _watch(self, task_ids: list[str], generation: int) -> Watch:
        watch = Watch(task_ids)
        with self._lock:
            early = []
            for task_id in task_ids:
                self._watches[task_id] = watch
                early.extend(self._early.pop(task_id, []))
        for event in early:
            self._dispatch(event)
        if generation != self._generation or not self._connected.is_set():
            self._resync([watch])  # the socket dropped meanwhile (or the tasks are older): fetch what was missed
        return watch

    def result(self, task: Task, inline: bytes | None = None) -> bytes:
        """The result pickle (as it came with the final event, or fetched), only if its hash is the recorded one."""
        data = inline
        if data is None:
            status, _, data = self.request("GET", f"tasks/{task.id}/result")
            if status != 200:
                raise StoreError(f"no result for task {task.name!r}: {data.decode(errors='replace')}")
        if sha256(data) != task.result_hash:
            raise StoreError(
                f"the result of task {task.name!r} does not match its recorded hash; refusing to unpickle it"
            )
        return data

    def group_results(self, ref: str) -> list[tuple[Task, bytes | None]]:
        """Every element's result of a foreach in one request, each checked against its recorded hash."""
        status, _, data = self.request("GET", f"tasks/{urllib.parse.quote(ref)}/results")
        if status != 200:
            raise _error(status, data)
        head, _, body = data.partition(b"\n")
        found, offset = [], 0
        for entry in json.loads(head):
            size = entry.pop("size")
            task = Task.from_json({"code": "", **entry})
            blob = body[offset : offset + size] if size else None
            offset += size
            if blob is not None and sha256(blob) != task.result_hash:
                raise StoreError(
                    f"the result of {task.label} does not match its recorded hash; refusing to unpickle it"
                )
            found.append((task, blob))
        return found

    def rerun(self, ref: str) -> list[Task]:
        reply = self.call("POST", f"tasks/{urllib.parse.quote(ref)}/rerun", b"")
        return [Task.from_json({"code": "", **t}) for t in reply["tasks"]]

    def graph(self) -> dict[str, Any]:
        return self.call("GET", "graph")

    def find(self, ref: str) -> Task:
        return Task.from_json(self.call("GET", f"tasks/{urllib.parse.quote(ref)}")["task"])

    def tasks(self, limit: int | None = None) -> list[Task]:
        return [Task.from_json(t) for t in self.call("GET", f"tasks?limit={limit or 0}")["tasks"]]

    def answer(self, prompt_id: str, answers: list[str]) -> None:
        self.call("POST", f"prompts/{prompt_id}", json.dumps({"answers": answers}).encode())

    def cancel(self, ref: str) -> Task:
        return Task.from_json(self.call("POST", f"tasks/{urllib.parse.quote(ref)}/cancel", b"")["task"])

    def pin(self, ref: str, pinned: bool) -> Task:
        action = "pin" if pinned else "unpin"
        return Task.from_json(self.call("POST", f"tasks/{urllib.parse.quote(ref)}/{action}", b"")["task"])

    def forget(self, keep_days: float | None) -> dict[str, int]:
        return self.call("POST", "clean", json.dumps({} if keep_days is None else {"keep_days": keep_days}).encode())

    def logs(self, ref: str) -> str:
        status, _, data = self.request("GET", f"tasks/{urllib.parse.quote(ref)}/logs")
        if status != 200:
            raise _error(status, data)
        return data.decode("utf-8", errors="replace")

    def executors(self) -> dict[str, dict[str, Any]]:
        return self.call("GET", "executors")["executors"]

    def clean(self, executor: str) -> dict[str, Any]:
        return self.call("POST", f"executors/{urllib.parse.quote(executor)}/clean", b"")

    def describe(self) -> str:
        pid = f", pid {self.connection.pid}" if self.connection.pid else ""
        return f"Jupyter server at {self.connection.url}{pid} (found through {self.connection.source})"

    def close(self) -> None:
        self._closed = True
        self._loop.call_soon_threadsafe(self._loop.stop)


def _error(status: int, data: bytes) -> Exception:
    """A failed request's answer as the error the engine raised (handlers.py maps each to its status)."""
    message = json.loads(data or b"{}").get("message", data.decode(errors="replace"))
    if status == 404:
        return NotFound(message)
    if status == 400:
        return SpecError(message)
    return EngineUnreachable(f"the hetflow engine answered {status}: {message}")
