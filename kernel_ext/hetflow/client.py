"""How the kernel finds its engine: HETFLOW_URL/HETFLOW_TOKEN, else a live Jupyter server's connection file (its
own server's first, through JPY_PARENT_PID), else an engine embedded in the kernel."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Protocol

from jupyter_core.paths import jupyter_runtime_dir

from hetflow_server.models import Task, TaskSpec
from hetflow_server.settings import Hetflow, load_config

from .serverclient import Connection, ServerClient
from .watch import Watch


class EngineClient(Protocol):
    """What the kernel asks of its engine, wherever it runs: ServerClient (a Jupyter server's, over HTTP and a
    WebSocket) and EmbeddedClient (one in this kernel) both answer it; engine errors arrive as protocol.py's."""

    mode: str  # "server" or "embedded"

    def submit(
        self, spec: TaskSpec, payload: bytes, elements: list[bytes] | None = None
    ) -> tuple[list[Task], bool, Watch | None]:
        """The tasks made (one per element of a foreach), whether all came from the cache, and their watch."""

    def watch(self, task_ids: list[str]) -> Watch:
        """Watch tasks already submitted (after a re-run)."""

    def result(self, task: Task, inline: bytes | None = None) -> bytes:
        """The result pickle (as it came with the final event, or fetched), only if its hash is the recorded one."""

    def group_results(self, ref: str) -> list[tuple[Task, bytes | None]]:
        """Every element of a foreach with its result (None for one that did not complete)."""

    def rerun(self, ref: str) -> list[Task]: ...
    def graph(self) -> dict[str, Any]: ...
    def find(self, ref: str) -> Task: ...
    def tasks(self, limit: int | None = None) -> list[Task]: ...
    def cancel(self, ref: str) -> Task: ...
    def pin(self, ref: str, pinned: bool) -> Task: ...
    def forget(self, keep_days: float | None) -> dict[str, int]: ...
    def answer(self, prompt_id: str, answers: list[str]) -> None: ...
    def logs(self, ref: str) -> str: ...
    def executors(self) -> dict[str, dict[str, Any]]: ...
    def clean(self, executor: str) -> dict[str, Any]: ...
    def describe(self) -> str: ...
    def close(self) -> None: ...


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read(path: Path, source: str) -> Connection | None:
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    pid = int(info.get("pid") or 0)
    if not pid or not _alive(pid):
        return None
    return Connection(info["url"], info["token"], source, pid)


def discover() -> Connection | None:
    """The engine this kernel should use, or None for the embedded one."""
    url, token = os.environ.get("HETFLOW_URL"), os.environ.get("HETFLOW_TOKEN")
    if url and token:
        return Connection(url if url.endswith("/") else url + "/", token, "HETFLOW_URL")
    runtime = Path(jupyter_runtime_dir())
    parent = os.environ.get("JPY_PARENT_PID")
    if parent:
        found = _read(runtime / f"hetflow-{parent}.json", "this kernel's server (JPY_PARENT_PID)")
        if found:
            return found
    files = sorted(runtime.glob("hetflow-*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    for path in files:
        found = _read(path, f"connection file {path}")
        if found:
            return found
    return None


_client: EngineClient | None = None


def get_client() -> EngineClient:
    """This kernel's engine, found (or started, embedded) on first use."""
    global _client
    if _client is None:
        connection = discover()
        if connection is not None:
            _client = ServerClient(connection, discover)
        else:
            from .embedded import EmbeddedClient

            _client = EmbeddedClient(Hetflow(config=load_config()))
    return _client
