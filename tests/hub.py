"""The real JupyterHub that `scripts/hub.sh up` starts, and its users' ways in: a login cookie or a hub token.

Everything goes through the hub's proxy, as a browser or a kernel of an HPC center's user would: REST with
`requests`, WebSockets (a kernel's channels, hetflow's events) with tornado's client on one event loop that every
socket shares, so that a socket collects its messages while another is being waited on.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from tornado.httpclient import HTTPRequest
from tornado.websocket import WebSocketClientConnection, websocket_connect

from envfile import running
from kernels import Execution, Output

STATE = Path(os.environ.get("HETFLOW_HUB", "/tmp/hetflow-hub"))
SPAWN_TIMEOUT = 90


def hub() -> Hub:
    """The hub from its env file; skip (or, in CI, fail) when it is not running."""
    return Hub(running(STATE / "env.sh", "run `bash scripts/hub.sh up` to start the JupyterHub", _answers))


def _answers(found: dict[str, str]) -> str | None:
    try:
        requests.get(found["HUB_API_URL"] + "/", timeout=5).raise_for_status()
    except requests.RequestException as error:
        return f"the JupyterHub at {found['HUB_URL']} does not answer ({error}): run `bash scripts/hub.sh up`"
    return None


class Hub:
    def __init__(self, env: dict[str, str]):
        self.url, self.api_url = env["HUB_URL"], env["HUB_API_URL"]
        self.homes = Path(env["HUB_HOMES"])
        self.password = Path(env["HUB_PASSWORD_FILE"]).read_text().strip()
        self._admin = {"Authorization": f"token {Path(env['HUB_ADMIN_TOKEN_FILE']).read_text().strip()}"}

    def api(self, method: str, path: str, body: Any = None) -> Any:
        """The hub's REST API with the CI service's admin token."""
        answer = requests.request(method, f"{self.api_url}/{path}", json=body, headers=self._admin, timeout=30)
        assert answer.status_code < 300, f"{method} {path}: {answer.status_code} {answer.text}"
        return answer.json() if answer.content else None

    def token(self, user: str) -> str:
        """A fresh API token of `user`'s, as `jupyterhub token` or the hub's token page would give."""
        return self.api("POST", f"users/{user}/tokens", {"note": "hetflow tests", "expires_in": 3600})["token"]

    def stop(self, user: str) -> None:
        """Stop `user`'s server, if it runs, and wait until the hub has it stopped."""
        answer = requests.delete(f"{self.api_url}/users/{user}/server", headers=self._admin, timeout=60)
        assert answer.status_code in (202, 204), f"stop {user}: {answer.status_code} {answer.text}"
        deadline = time.monotonic() + 60
        while self.api("GET", f"users/{user}")["servers"]:
            assert time.monotonic() < deadline, f"{user}'s server still not stopped after 60 s"
            time.sleep(0.1)

    def start(self, user: str) -> None:
        """Ask for `user`'s server (a no-op when it runs or is starting); `wait_ready` waits for it."""
        answer = requests.post(f"{self.api_url}/users/{user}/server", headers=self._admin, timeout=30)
        assert answer.status_code in (201, 202, 400), f"start {user}: {answer.status_code} {answer.text}"

    def wait_ready(self, user: str) -> dict[str, Any]:
        """The user's default server once it answers (its model: url, state with the spawner's pid, ...)."""
        deadline = time.monotonic() + SPAWN_TIMEOUT
        while time.monotonic() < deadline:
            server = self.api("GET", f"users/{user}").get("servers", {}).get("")
            if server and server["ready"]:
                return server
            time.sleep(0.2)
        raise AssertionError(f"{user}'s server not ready after {SPAWN_TIMEOUT} s (log: {STATE / 'hub' / 'hub.log'})")

    def login(self, user: str) -> requests.Session:
        """A browser's session: the hub's login form (with its _xsrf), then the hub's login cookie."""
        session = requests.Session()
        form = session.get(f"{self.url}/hub/login", timeout=30)
        xsrf = session.cookies.get("_xsrf", path="/hub/")
        assert form.status_code == 200 and xsrf, f"no login form: {form.status_code}"
        answer = session.post(
            f"{self.url}/hub/login?next=",
            data={"username": user, "password": self.password, "_xsrf": xsrf},
            allow_redirects=False,
            timeout=30,
        )
        assert answer.status_code == 302, f"login as {user} refused: {answer.status_code} {answer.text[:300]}"
        return session


class User:
    """One user's single-user server through the proxy: `/user/NAME/...`, with a login cookie or a token."""

    def __init__(self, hub: Hub, name: str, loop: asyncio.AbstractEventLoop, *, token: str | None = None):
        self.hub, self.name, self.loop, self.token = hub, name, loop, token
        self.base = f"{hub.url}/user/{name}/"
        self.http = requests.Session()
        if token:
            self.http.headers["Authorization"] = f"token {token}"

    @classmethod
    def logged_in(cls, hub: Hub, name: str, loop: asyncio.AbstractEventLoop, session: requests.Session) -> User:
        """With a browser's cookies: the hub's OAuth round trip gives the server's own cookie and its _xsrf."""
        user = cls(hub, name, loop)
        user.http = session
        page = session.get(user.base + "lab", timeout=60)
        assert page.status_code == 200 and urlsplit(page.url).path == f"/user/{name}/lab", page.url
        xsrf = session.cookies.get("_xsrf", path=f"/user/{name}/")
        assert xsrf, f"no _xsrf cookie for /user/{name}/: {session.cookies}"
        session.headers["X-XSRFToken"] = xsrf
        return user

    def request(self, method: str, path: str, body: Any = None, **options: Any) -> requests.Response:
        return self.http.request(method, self.base + path, json=body, timeout=60, **options)

    def json(self, method: str, path: str, body: Any = None) -> Any:
        answer = self.request(method, path, body)
        assert answer.status_code < 300, f"{self.name}: {method} {path}: {answer.status_code} {answer.text[:500]}"
        return answer.json() if answer.content else None

    def socket(self, path: str) -> Socket:
        """A WebSocket to the user's server, with the same credentials as its REST calls."""
        prepared = self.http.prepare_request(requests.Request("GET", self.base + path))
        headers = {k: v for k, v in prepared.headers.items() if k in ("Authorization", "Cookie")}
        url = self.base.replace("http://", "ws://", 1) + path
        return Socket(self.loop, HTTPRequest(url, headers=headers, request_timeout=60))

    def kernel(self) -> HubKernel:
        return HubKernel(self)


class Socket:
    """A WebSocket whose messages (JSON) pile up in `messages` whenever the shared loop runs."""

    def __init__(self, loop: asyncio.AbstractEventLoop, request: HTTPRequest):
        self.loop, self.messages = loop, []
        self.closed = False
        self.conn: WebSocketClientConnection = self._run(
            lambda: websocket_connect(request, on_message_callback=self._receive)
        )

    def _run(self, start: Callable[[], Awaitable[Any]]) -> Any:
        """Start and await on the shared loop: tornado's futures belong to the loop running when they are made."""

        async def run() -> Any:
            return await start()

        return self.loop.run_until_complete(run())

    def _receive(self, message: str | bytes | None) -> None:
        if message is None:
            self.closed = True
        else:
            self.messages.append(json.loads(message))

    def send(self, message: dict[str, Any]) -> None:
        self._run(lambda: self.conn.write_message(json.dumps(message)))

    def wait(self, seconds: float) -> None:
        """Let every socket on the loop take in what arrives for `seconds`."""
        self.loop.run_until_complete(asyncio.sleep(seconds))

    def wait_for(self, found: Any, timeout: float) -> Any:
        """Run the loop until `found(messages)` gives something true; that something."""
        deadline = time.monotonic() + timeout
        while not (result := found(self.messages)):
            assert time.monotonic() < deadline and not self.closed, f"timed out; last messages: {self.messages[-5:]}"
            self.wait(0.05)
        return result

    def close(self) -> None:
        async def close() -> None:  # on the loop: tornado writes the close frame through the running loop
            self.conn.close()
            await asyncio.sleep(0.1)

        self.loop.run_until_complete(close())


class HubKernel:
    """A kernel the user's server starts, driven over its channels WebSocket as JupyterLab drives it."""

    def __init__(self, user: User):
        self.user = user
        self.id = user.json("POST", "api/kernels", {"name": "python3"})["id"]
        self.session = uuid.uuid4().hex
        self.channels = user.socket(f"api/kernels/{self.id}/channels?session_id={self.session}")

    def run(self, code: str, timeout: float = 90) -> Execution:
        msg_id = uuid.uuid4().hex
        header = {
            "msg_id": msg_id,
            "msg_type": "execute_request",
            "session": self.session,
            "username": "",
            "version": "5.3",
        }
        content = {"code": code, "silent": False, "store_history": True, "user_expressions": {}, "allow_stdin": False}
        execution = Execution(code, time.monotonic())
        self.channels.send(
            {
                "header": header,
                "parent_header": {},
                "metadata": {},
                "content": content,
                "channel": "shell",
                "buffers": [],
            }
        )

        def replied(messages: list[dict[str, Any]]) -> dict[str, Any] | None:
            mine = [m for m in messages if m.get("parent_header", {}).get("msg_id") == msg_id]
            idle = any(m["msg_type"] == "status" and m["content"]["execution_state"] == "idle" for m in mine)
            reply = next((m for m in mine if m["channel"] == "shell"), None)
            return reply if idle and reply else None

        reply = self.channels.wait_for(replied, timeout)
        for message in self.channels.messages:
            mine = message.get("parent_header", {}).get("msg_id") == msg_id
            if mine and message["channel"] == "iopub" and message["msg_type"] != "status":
                execution.outputs.append(Output(time.monotonic(), message["msg_type"], message["content"]))
        execution.reply = reply["content"]
        return execution

    def value(self, expression: str) -> Any:
        out = self.run(f"import json as _j; print(_j.dumps({expression}))").check()
        return json.loads(out.stdout.strip().splitlines()[-1])

    def shutdown(self) -> None:
        self.channels.close()
        self.user.request("DELETE", f"api/kernels/{self.id}")
