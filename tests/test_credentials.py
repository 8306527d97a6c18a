"""A credential's value never comes back: not from any route, not in task rows, logs, events or payloads."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections.abc import Callable

from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from hetflow_server.handlers import route_table
from servers import JupyterServer

SECRET = "s3cr3t-Value-" + "9f8e7d6c5b4a"


def collect_events(
    server: JupyterServer,
    seconds: float,
    connected: threading.Event | None = None,
    until: Callable[[str], bool] | None = None,
) -> list[str]:
    """Everything the event socket says during `seconds` (or until a message for which `until` is true), as raw
    text; `connected` is set once the socket is open (from then on every event reaches it)."""

    async def listen() -> list[str]:
        url = f"ws://127.0.0.1:{server.port}{server.base_url}hetflow/api/events"
        socket = await websocket_connect(HTTPRequest(url, headers={"Authorization": f"token {server.token}"}))
        if connected is not None:
            connected.set()
        seen: list[str] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while loop.time() < deadline:
            try:
                message = await asyncio.wait_for(socket.read_message(), deadline - loop.time())
            except asyncio.TimeoutError:
                break
            if message is None:
                break
            seen.append(message)
            if until is not None and until(message):
                break
        socket.close()
        return seen

    return asyncio.run(listen())


def test_a_credential_is_stored_privately_and_never_shown_back(server: JupyterServer) -> None:
    created = server.json(
        "PUT",
        "hetflow/api/credentials/cluster-key",
        {"kind": "password", "fields": {"password": SECRET, "username": "alice"}},
    )
    assert SECRET not in json.dumps(created)
    assert created["credential"]["public"] == {"username": "alice"}
    path = server.store / "credentials.json"
    assert path.stat().st_mode & 0o777 == 0o600 and SECRET in path.read_text()
    listed = server.json("GET", "hetflow/api/credentials")["credentials"]
    assert [c["name"] for c in listed] == ["cluster-key"] and SECRET not in json.dumps(listed)


def test_a_secret_printed_by_a_task_is_masked_everywhere(server: JupyterServer, tmp_path) -> None:
    server.json("PUT", "hetflow/api/credentials/api-token", {"kind": "token", "fields": {"token": SECRET}})
    kernel = server.notebook_kernel("secrets.ipynb")
    try:
        # the cell builds the value from pieces, so neither the code nor the payload holds it
        half = len(SECRET) // 2
        kernel.run(f"left, right = {SECRET[:half]!r}, {SECRET[half:]!r}").check()
        events: list[str] = []
        connected = threading.Event()

        def leaky_ended(message: str) -> bool:
            event = json.loads(message)
            return event.get("type") == "task" and event["data"]["name"] == "leaky" and event["state"] == "failed"

        listener = threading.Thread(
            target=lambda: events.extend(collect_events(server, 60, connected=connected, until=leaky_ended))
        )
        listener.start()
        assert connected.wait(30), "the event socket did not open"
        out = kernel.run(
            "%%remote name=leaky\nimport time\nfor i in range(3):\n    print('token is', left + right, flush=True)\n"
            "    time.sleep(0.2)\nraise RuntimeError('failed with ' + left + right)\n"
        )
        listener.join(60)
        assert not listener.is_alive(), "the event socket never said that the task failed"
        assert "token is ********" in out.stdout and SECRET not in out.stdout
        assert "failed with ********" in out.traceback and SECRET not in out.traceback
        assert any("token is ********" in e for e in events), events
        assert all(SECRET not in e for e in events)
    finally:
        kernel.shutdown()
    # every API answer, then every file of the store but the credential file itself
    for pattern, _ in route_table():
        if "(" not in pattern and not pattern.endswith("events"):
            assert SECRET.encode() not in server.request("GET", pattern)[2]
    task = server.json("GET", "hetflow/api/tasks/leaky")
    assert SECRET not in json.dumps(task)
    assert SECRET.encode() not in server.request("GET", f"hetflow/api/tasks/{task['task']['id']}/logs")[2]
    scanned = 0
    for path in server.store.rglob("*"):
        if path.is_file() and path.name != "credentials.json":
            assert SECRET.encode() not in path.read_bytes(), f"the secret is in {path}"
            scanned += 1
    assert scanned >= 4
    with sqlite3.connect(server.store / "hetflow.db") as db:
        rows = [json.dumps(list(r)) for table in ("tasks", "events") for r in db.execute(f"SELECT * FROM {table}")]
    assert rows and all(SECRET not in r for r in rows)


def test_bad_credentials_are_refused_without_storing_anything(server: JupyterServer) -> None:
    before = server.json("GET", "hetflow/api/credentials")
    for body, message in [
        ({"kind": "ssh-key", "fields": {}}, "needs private_key"),
        ({"kind": "magic", "fields": {"x": "y"}}, "unknown credential kind"),
        ({"kind": "token", "fields": {"token": "abcd", "extra": "1"}}, "unknown: extra"),
    ]:
        status, _, data = server.request("PUT", "hetflow/api/credentials/bad", body=json.dumps(body).encode())
        assert status == 400 and message in json.loads(data)["message"]
    assert server.json("GET", "hetflow/api/credentials") == before
    assert server.request("DELETE", "hetflow/api/credentials/never-made")[0] == 404
