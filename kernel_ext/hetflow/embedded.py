"""The engine embedded in the kernel, on a background thread: for kernels with no Jupyter server to talk to."""

from __future__ import annotations

import asyncio
import atexit
import threading
from collections.abc import Coroutine
from dataclasses import asdict
from typing import Any, TypeVar

from hetflow_server.engine import Engine
from hetflow_server.models import Task, TaskSpec
from hetflow_server.protocol import sha256
from hetflow_server.settings import Hetflow

from .watch import Watch

T = TypeVar("T")


class EmbeddedClient:
    """Runs the engine's event loop in a daemon thread and calls into it from the kernel's main thread."""

    mode = "embedded"

    def __init__(self, settings: Hetflow):
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="hetflow-engine", daemon=True)
        self._thread.start()
        self.engine = Engine(settings)
        try:
            self.call(self.engine.start())
        except BaseException:
            self.close()
            raise
        atexit.register(self.close)

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def on_loop(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a plain engine method on the engine's thread (the store's connection lives there)."""

        async def run() -> Any:
            return fn(*args, **kwargs)

        return self.call(run())

    def submit(
        self, spec: TaskSpec, payload: bytes, elements: list[bytes] | None = None
    ) -> tuple[list[Task], bool, Watch | None]:
        watch = Watch()
        tasks, cached = self.call(self.engine.submit(spec, payload, elements, watch.deliver))
        watch.expect(t.id for t in tasks if not t.state.final)
        return tasks, cached, None if cached else watch

    def watch(self, task_ids: list[str]) -> Watch:
        """Watch tasks already submitted (after a re-run)."""
        watch = Watch(task_ids)

        async def subscribe() -> None:
            for task_id in task_ids:
                self.engine.events.subscribe(watch.deliver, task_id)
                task = self.engine.scheduler.lookup(task_id)
                if task is not None and task.state.final:  # it ended before we listened
                    watch.deliver({"type": "task", "task": task.id, "state": task.state.value, "data": task.to_json()})

        self.call(subscribe())
        return watch

    def result(self, task: Task, inline: bytes | None = None) -> bytes:
        """The result pickle (as it came with the final event, or read), only if its hash is the recorded one."""
        assert task.result_hash
        if inline is not None and sha256(inline) == task.result_hash:
            return inline
        return self.call(self.engine.result(task.id))[1]

    def group_results(self, ref: str) -> list[tuple[Task, bytes | None]]:
        return self.call(self.engine.group_results(ref))

    def rerun(self, ref: str) -> list[Task]:
        return self.call(self.engine.rerun(ref))

    def graph(self) -> dict[str, Any]:
        return self.on_loop(self.engine.graph)

    def find(self, ref: str) -> Task:
        return self.on_loop(self.engine.find, ref)

    def tasks(self, limit: int | None = None) -> list[Task]:
        return self.on_loop(self.engine.tasks, limit=limit)

    def answer(self, prompt_id: str, answers: list[str]) -> None:
        self.on_loop(self.engine.prompts.answer, prompt_id, answers)

    def cancel(self, ref: str) -> Task:
        return self.call(self.engine.cancel(ref))

    def pin(self, ref: str, pinned: bool) -> Task:
        return self.call(self.engine.pin(ref) if pinned else self.engine.unpin(ref))

    def forget(self, keep_days: float | None) -> dict[str, int]:
        return asdict(self.on_loop(self.engine.forget, keep_days))

    def logs(self, ref: str) -> str:
        return self.on_loop(self.engine.logs, ref).decode("utf-8", errors="replace")

    def executors(self) -> dict[str, dict[str, Any]]:
        return self.on_loop(self.engine.describe_executors)

    def clean(self, executor: str) -> dict[str, Any]:
        return self.call(self.engine.clean(executor))

    def describe(self) -> str:
        return f"embedded in this kernel (store {self.engine.settings.store_path})"

    def close(self) -> None:
        if self._loop.is_closed():
            return
        if self._thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(self.engine.close(), self._loop).result(timeout=10)
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(timeout=10)
        self._loop.close()
