"""Every route of the API refuses a caller without Jupyter's auth or the engine's token; cookies need XSRF."""

from __future__ import annotations

import base64
import json
import os
import re

import pytest

from hetflow_server.handlers import route_table
from servers import JupyterServer

METHODS = ("get", "post", "put", "delete", "patch")


def calls() -> list[tuple[str, str]]:
    """(method, path) for every handler method of every route, with sample values in the path's groups."""
    found = []
    for pattern, handler in route_table():
        path = re.sub(r"\((cancel)\|[^)]*\)", r"\1", pattern)
        path = re.sub(r"\([^)]*\)[+*]?", "sample", path)
        for method in METHODS:
            if method in vars(handler):
                found.append((method.upper(), path))
    return found


CALLS = calls()
WRONG = {
    "no credentials": None,
    "wrong engine token": "Bearer " + "x" * 43,
    "wrong jupyter token": "token not-the-token",
    "garbage": "Basic " + base64.b64encode(b"user:pass").decode(),
}


def test_the_enumeration_covers_every_route() -> None:
    assert len(CALLS) >= len(route_table())
    assert {
        ("GET", "hetflow/api/events"),
        ("PUT", "hetflow/api/credentials/sample"),
        ("POST", "hetflow/api/tasks"),
    } <= set(CALLS)


@pytest.mark.parametrize("who", list(WRONG), ids=list(WRONG))
def test_every_route_refuses_callers_without_valid_auth(server: JupyterServer, who: str) -> None:
    websocket = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
    }
    for method, path in CALLS:
        headers = websocket if path.endswith("/events") else {"Content-Type": "application/json"}
        body = None if method in ("GET", "DELETE") else b"{}"
        status, _, data = server.request(method, path, auth=WRONG[who], body=body, headers=headers)
        assert status in (401, 403), f"{method} {path} as {who}: {status} {data[:200]!r}"


def test_the_right_tokens_are_let_in(server: JupyterServer) -> None:
    """The control: the same calls with valid credentials pass the auth layer (so the refusals above are real)."""
    for auth in ("engine", "jupyter"):
        for method, path in CALLS:
            if path.endswith("/events") or method != "GET":
                continue
            status, _, _ = server.request(method, path, auth=auth)
            assert status not in (401, 403), f"{method} {path} with the {auth} token: {status}"


def test_cookie_requests_need_the_xsrf_token(server: JupyterServer) -> None:
    # log in the way a browser does: the token in the URL sets the session cookie
    status, headers, _ = server.request("GET", f"?token={server.token}", auth=None)
    cookies = "; ".join(c.split(";")[0] for c in headers.get_all("Set-Cookie") or [])
    assert status in (200, 302) and cookies
    body = json.dumps({"kind": "token", "fields": {"token": "abcdef"}}).encode()
    status, _, _ = server.request(
        "PUT", "hetflow/api/credentials/viacookie", auth=None, body=body, headers={"Cookie": cookies}
    )
    assert status == 403, "a cookie-authenticated write without XSRF must be refused"
    xsrf = re.search(r"_xsrf=([^;]+)", cookies)
    assert xsrf, cookies
    status, _, data = server.request(
        "PUT",
        "hetflow/api/credentials/viacookie",
        auth=None,
        body=body,
        headers={"Cookie": cookies, "X-XSRFToken": xsrf.group(1)},
    )
    assert status == 200, data
    assert server.request("DELETE", "hetflow/api/credentials/viacookie")[0] == 204
