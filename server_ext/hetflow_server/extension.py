"""The Jupyter server extension: starts the engine in the server, publishes its connection file, serves the API."""

from __future__ import annotations

import gc
import json
import os
import secrets
from pathlib import Path
from typing import Any

from jupyter_core.paths import jupyter_runtime_dir
from jupyter_server.extension.application import ExtensionApp

from .engine import Engine
from .handlers import route_table
from .settings import Hetflow


def connection_file(pid: int) -> Path:
    """Named after the server's pid: a kernel finds its own server's file through JPY_PARENT_PID."""
    return Path(jupyter_runtime_dir()) / f"hetflow-{pid}.json"


class HetflowApp(ExtensionApp):
    name = "hetflow"
    classes = [Hetflow]

    def initialize_settings(self) -> None:
        self.hetflow = Hetflow(parent=self)
        self.engine = Engine(self.hetflow)
        self.token = secrets.token_urlsafe(32)
        self.connection_path = connection_file(os.getpid())
        self.settings.update({"hetflow_engine": self.engine, "hetflow_token": self.token})

    def initialize_handlers(self) -> None:
        self.handlers.extend(route_table())

    def _api_url(self) -> str:
        server = self.serverapp
        assert server is not None
        host = server.ip if server.ip not in ("", "0.0.0.0", "*", "::") else "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        scheme = "https" if server.certfile else "http"
        return f"{scheme}://{host}:{server.port}{server.base_url}hetflow/api/"

    async def _start_jupyter_server_extension(self, serverapp: Any) -> None:
        await self.engine.start()
        # what the server and the engine hold from their start lives as long as they do: out of the collector's
        # reach, a full collection (which a listing's garbage sets off) takes ~1 ms instead of holding up every
        # request ~95 ms
        gc.freeze()
        info = {"url": self._api_url(), "token": self.token, "pid": os.getpid(), "store": str(self.hetflow.store_path)}
        self.connection_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.connection_path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(info, fh)
        os.replace(tmp, self.connection_path)
        self.log.info(
            "hetflow engine started; store %s; kernels connect through %s", info["store"], self.connection_path
        )

    async def stop_extension(self) -> None:
        self.connection_path.unlink(missing_ok=True)
        await self.engine.close()
