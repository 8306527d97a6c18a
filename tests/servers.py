"""A real `jupyter server` subprocess with hetflow's extension, its own dirs, port, token and base_url."""

from __future__ import annotations

import http.client
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kernels import Kernel


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class JupyterServer:
    def __init__(
        self, root: Path, base_url: str = "/", hetflow: dict[str, Any] | None = None, env: dict[str, str] | None = None
    ):
        self.root, self.base_url = root, base_url
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.runtime = root / "runtime"
        (root / "config").mkdir(parents=True, exist_ok=True)
        settings = {"Hetflow": {"retry_backoff": 0.05, **(hetflow or {})}}
        (root / "config" / "jupyter_server_config.json").write_text(json.dumps(settings))
        self.env = dict(
            os.environ,
            JUPYTER_DATA_DIR=str(root / "data"),
            JUPYTER_CONFIG_DIR=str(root / "config"),
            JUPYTER_RUNTIME_DIR=str(self.runtime),
            **(env or {}),
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def store(self) -> Path:
        return self.root / "data" / "hetflow"

    def start(self) -> None:
        command = [
            str(Path(sys.executable).parent / "jupyter-server"),
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            f"--ServerApp.token={self.token}",
            f"--ServerApp.base_url={self.base_url}",
            "--ServerApp.allow_root=True",
            "--ServerApp.open_browser=False",
        ]
        log = open(self.root / "server.log", "ab")  # noqa: SIM115 - handed to the subprocess
        self.proc = subprocess.Popen(command, env=self.env, cwd=self.root, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not self.connection_path.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"jupyter server did not start:\n{(self.root / 'server.log').read_text()[-3000:]}")
            time.sleep(0.1)

    @property
    def connection_path(self) -> Path:
        assert self.proc is not None
        return self.runtime / f"hetflow-{self.proc.pid}.json"

    @property
    def connection(self) -> dict[str, Any]:
        return json.loads(self.connection_path.read_text())

    def request(
        self,
        method: str,
        path: str,
        *,
        auth: str | None = "jupyter",
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any, bytes]:
        """`path` is relative to base_url; auth is "jupyter" (the server's token), "engine" (the kernels'
        token), a literal Authorization header value, or None."""
        all_headers = dict(headers or {})
        if auth == "jupyter":
            all_headers["Authorization"] = f"token {self.token}"
        elif auth == "engine":
            all_headers["Authorization"] = f"Bearer {self.connection['token']}"
        elif auth is not None:
            all_headers["Authorization"] = auth
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, self.base_url + path, body, all_headers)
            response = conn.getresponse()
            return response.status, response.headers, response.read()
        finally:
            conn.close()

    def json(self, method: str, path: str, body: Any = None, auth: str | None = "jupyter") -> Any:
        status, _, data = self.request(
            method, path, auth=auth, body=None if body is None else json.dumps(body).encode()
        )
        assert status < 300, f"{method} {path}: {status} {data!r}"
        return json.loads(data) if data else None

    def notebook_kernel(self, notebook: str) -> Kernel:
        """A kernel the server starts for a notebook (a session), as JupyterLab would."""
        (self.root / notebook).parent.mkdir(parents=True, exist_ok=True)
        session = self.json(
            "POST",
            "api/sessions",
            {"path": notebook, "name": notebook.rsplit("/", 1)[-1], "type": "notebook", "kernel": {"name": "python3"}},
        )
        kernel_id = session["kernel"]["id"]
        return Kernel.attach(
            self.root,
            self.runtime / f"kernel-{kernel_id}.json",
            lambda: self.request("DELETE", f"api/sessions/{session['id']}"),
            lambda: self.request("POST", f"api/kernels/{kernel_id}/interrupt"),
        )

    def outside_kernel(self, root: Path) -> Kernel:
        """A kernel not started by the server (it outlives the server), finding it through the runtime dir."""
        return Kernel.local(root, env={"JUPYTER_RUNTIME_DIR": str(self.runtime)})

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


def notebook_kernel_fixture(notebook: str) -> Any:
    """A module's `kernel` fixture: one notebook's kernel on the module's `server`, shut down after its tests."""

    @pytest.fixture(scope="module")
    def kernel(server: JupyterServer) -> Iterator[Kernel]:
        started = server.notebook_kernel(notebook)
        yield started
        started.shutdown()

    return kernel
