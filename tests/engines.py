"""A real engine driven directly on an asyncio loop (no kernel, no server), and payloads built the way `%%remote`
captures a cell (kernel_ext/hetflow/magics.py)."""

from __future__ import annotations

import asyncio
import contextlib
import pickle
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import cloudpickle

from hetflow_server.engine import Engine
from hetflow_server.models import State, Task, TaskSpec
from hetflow_server.protocol import Payload, sha256
from hetflow_server.settings import Hetflow


def payload(code: str, outputs: list[str], inputs: dict[str, Any] | None = None) -> bytes:
    return Payload(
        code=code,
        source=f"%%remote\n{code}",
        filename="Cell In[1]",
        line_offset=1,
        inputs={name: cloudpickle.dumps(value) for name, value in (inputs or {}).items()},
        outputs=outputs,
    ).pickle()


async def submit(
    engine: Engine,
    code: str,
    outputs: list[str],
    name: str,
    elements: list[bytes] | None = None,
    values: dict[str, Any] | None = None,
    **spec: Any,
) -> list[Task]:
    """`values`: the cell's inputs, pickled into the payload as a kernel does."""
    data = payload(code, outputs, values)
    inputs = {name: sha256(blob) for name, blob in pickle.loads(data)["inputs"].items()}
    task_spec = TaskSpec(code=code, inputs=inputs, outputs=outputs, name=name, **{"cache": False, **spec})
    tasks, _ = await engine.submit(task_spec, data, elements)
    return tasks


async def settle(engine: Engine, tasks: list[Task], timeout: float = 60) -> list[Task]:
    """Wait until every task is completed, failed or cancelled (woken by the engine's events)."""
    ids = {t.id for t in tasks}
    changed = asyncio.Event()
    stop = engine.events.subscribe(lambda event: changed.set() if event["task"] in ids else None)
    deadline = time.monotonic() + timeout
    try:
        while True:
            current = [engine.scheduler.lookup(t.id) or t for t in tasks]
            if all(t.state.final for t in current):
                return current
            changed.clear()
            await asyncio.wait_for(changed.wait(), max(0.0, deadline - time.monotonic()))
    finally:
        stop()


async def until_running(engine: Engine, task: Task) -> None:
    while (engine.scheduler.lookup(task.id) or task).state is not State.RUNNING:
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running(tmp_path: Path, executors: dict[str, dict[str, Any]], default: str) -> AsyncIterator[Engine]:
    settings = Hetflow(
        store_dir=str(tmp_path / "store"), executors=executors, default_executor=default, retry_backoff=0.05
    )
    engine = Engine(settings)
    await engine.start()
    try:
        yield engine
    finally:
        await engine.close()


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())


def outputs(result: bytes) -> dict[str, Any]:
    return cloudpickle.loads(result)["outputs"]
