"""A real IPython kernel driven through jupyter_client, with every iopub message time-stamped on arrival."""

from __future__ import annotations

import json
import os
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jupyter_client import BlockingKernelClient
from jupyter_client.manager import start_new_kernel

Answerer = Callable[[str, bool], str]  # (prompt, password?) -> what the user types


@dataclass
class Output:
    time: float
    msg_type: str
    content: dict[str, Any]


@dataclass
class Execution:
    code: str
    started: float
    outputs: list[Output] = field(default_factory=list)
    reply: dict[str, Any] = field(default_factory=dict)
    inputs: list[dict[str, Any]] = field(default_factory=list)  # the input requests it made (prompt, password)

    def _stream(self, name: str) -> str:
        return "".join(o.content["text"] for o in self.outputs if o.msg_type == "stream" and o.content["name"] == name)

    @property
    def stdout(self) -> str:
        return self._stream("stdout")

    @property
    def stderr(self) -> str:
        return self._stream("stderr")

    @property
    def error(self) -> dict[str, Any] | None:
        return next((o.content for o in self.outputs if o.msg_type == "error"), None)

    @property
    def traceback(self) -> str:
        return "\n".join(self.error["traceback"]) if self.error else ""

    @property
    def result(self) -> str | None:
        found = [o.content["data"]["text/plain"] for o in self.outputs if o.msg_type == "execute_result"]
        return found[-1] if found else None

    @property
    def ok(self) -> bool:
        return self.reply.get("status") == "ok"

    @property
    def duration(self) -> float:
        return self.outputs[-1].time - self.started

    def check(self) -> Execution:
        assert self.ok, f"cell failed:\n{self.code}\n--- stderr:\n{self.stderr}\n--- error:\n{self.traceback}"
        return self


class Kernel:
    """A real kernel, driven over ZMQ with jupyter_client; hetflow is loaded on start."""

    def __init__(self, root: Path, client: Any, shutdown: Any, interrupt: Any):
        self.root, self.client, self._shutdown, self.interrupt = root, client, shutdown, interrupt
        self.run("%load_ext hetflow").check()

    @classmethod
    def local(cls, root: Path, config: dict[str, Any] | None = None, env: dict[str, str] | None = None) -> Kernel:
        """A kernel of our own, with its own Jupyter dirs (so an embedded engine with its own store), unless
        `env` points it elsewhere (e.g. at a server's runtime dir)."""
        (root / "config").mkdir(parents=True, exist_ok=True)
        settings = {"Hetflow": {"retry_backoff": 0.05, **(config or {})}}
        (root / "config" / "jupyter_server_config.json").write_text(json.dumps(settings))
        full_env = {
            **os.environ,
            "JUPYTER_DATA_DIR": str(root / "data"),
            "JUPYTER_CONFIG_DIR": str(root / "config"),
            "JUPYTER_RUNTIME_DIR": str(root / "runtime"),
            **(env or {}),
        }
        manager, client = start_new_kernel(kernel_name="python3", env=full_env, cwd=str(root))

        def shutdown() -> None:
            client.stop_channels()
            manager.shutdown_kernel(now=True)

        return cls(root, client, shutdown, manager.interrupt_kernel)

    @classmethod
    def attach(cls, root: Path, connection_file: Path, shutdown: Any, interrupt: Any) -> Kernel:
        """A kernel someone else started (a Jupyter server), reached through its connection file."""
        client = BlockingKernelClient()
        client.load_connection_file(str(connection_file))
        client.start_channels()
        client.wait_for_ready(timeout=60)
        return cls(root, client, lambda: (client.stop_channels(), shutdown()), interrupt)

    @property
    def store(self) -> Path:
        return self.root / "data" / "hetflow"

    def start(self, code: str, cell_id: str | None = None, stdin: bool = False) -> tuple[str, Execution]:
        """Send an execute_request, with the cell id in its metadata as JupyterLab sends it."""
        content = {"code": code, "silent": False, "store_history": True, "user_expressions": {}, "allow_stdin": stdin}
        msg = self.client.session.msg("execute_request", content, metadata={"cellId": cell_id} if cell_id else {})
        self.client.shell_channel.send(msg)
        return msg["header"]["msg_id"], Execution(code, time.monotonic())

    def collect(
        self, msg_id: str, execution: Execution, timeout: float = 60, answer: Answerer | None = None
    ) -> Execution:
        """The cell's outputs until it is idle; `answer` replies to its input requests (prompt, password?)."""
        deadline = time.monotonic() + timeout
        while True:
            if answer is not None:
                while self.client.stdin_channel.msg_ready():
                    request = self.client.get_stdin_msg()["content"]
                    execution.inputs.append(request)
                    self.client.input(answer(request["prompt"], request["password"]))
                try:
                    msg = self.client.get_iopub_msg(timeout=0.1)
                except queue.Empty:
                    if time.monotonic() > deadline:
                        raise
                    continue
            else:
                msg = self.client.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "status":
                if msg["content"]["execution_state"] == "idle":
                    break
                continue
            execution.outputs.append(Output(time.monotonic(), msg["msg_type"], msg["content"]))
        while True:
            reply = self.client.get_shell_msg(timeout=max(0.1, deadline - time.monotonic()))
            if reply["parent_header"].get("msg_id") == msg_id:
                execution.reply = reply["content"]
                execution.outputs.append(Output(time.monotonic(), "reply", reply["content"]))
                return execution

    def run(
        self, code: str, timeout: float = 60, cell_id: str | None = None, answer: Answerer | None = None
    ) -> Execution:
        msg_id, execution = self.start(code, cell_id, stdin=answer is not None)
        return self.collect(msg_id, execution, timeout, answer)

    def value(self, expression: str) -> Any:
        """Evaluate in the kernel and bring the value back as JSON."""
        out = self.run(f"import json as _j; print(_j.dumps({expression}))").check()
        return json.loads(out.stdout.strip().splitlines()[-1])

    def task_count(self) -> int:
        return self.value("len(__import__('hetflow.client').client.get_client().tasks())")

    def shutdown(self) -> None:
        self._shutdown()
