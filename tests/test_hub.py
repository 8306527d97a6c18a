"""hetflow under a real JupyterHub (scripts/hub.sh): two users, each with an engine of their own, apart.

alice comes in as a browser does (the hub's login form, a cookie, XSRF on writes), bob with a hub API token. Both
run a `%%remote` cell and store a credential while each listens on their event stream; the tests then look at what
each could see, what the hub refuses, and where each user's files landed.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from tornado.httpclient import HTTPClientError

from hub import Hub, Socket, User, hub

NAMES = ("alice", "bob")


@dataclass
class Run:
    """What both users did, and everything each was shown while doing it."""

    marker: str
    secrets: dict[str, str]
    credentials: dict[str, str]
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)
    status: dict[str, str] = field(default_factory=dict)
    events: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    answers: list[str] = field(default_factory=list)  # every API answer body, to look for secrets in


@pytest.fixture(scope="module")
def the_hub() -> Hub:
    return hub()


@pytest.fixture(scope="module")
def users(the_hub: Hub) -> Iterator[dict[str, User]]:
    """alice logs in through the form and spawns from the browser's spawn URL; bob gets a token and is started
    through the hub's API. Both servers start afresh (the code and configs of now) and together."""
    loop = asyncio.new_event_loop()
    for name in NAMES:
        the_hub.stop(name)
    browser = the_hub.login("alice")
    spawn = browser.get(f"{the_hub.url}/hub/spawn/alice", allow_redirects=False, timeout=30)
    assert spawn.status_code in (302, 303), f"spawn alice: {spawn.status_code} {spawn.text[:300]}"
    the_hub.start("bob")
    for name in NAMES:
        the_hub.wait_ready(name)
    yield {
        "alice": User.logged_in(the_hub, "alice", loop, browser),
        "bob": User(the_hub, "bob", loop, token=the_hub.token("bob")),
    }
    loop.close()
    with ThreadPoolExecutor() as pool:  # nothing of theirs runs on through the rest of the suite
        list(pool.map(the_hub.stop, NAMES))


@pytest.fixture(scope="module")
def run(users: dict[str, User]) -> Iterator[Run]:
    marker = uuid.uuid4().hex[:8]
    record = Run(
        marker,
        secrets={name: f"{name}-secret-{uuid.uuid4().hex}" for name in NAMES},
        credentials={name: f"{name}-cluster-{marker}" for name in NAMES},
    )
    sockets: dict[str, Socket] = {name: users[name].socket("hetflow/api/events") for name in NAMES}
    kernels = {name: users[name].kernel() for name in NAMES}
    try:
        for name, user in users.items():
            body = {"kind": "password", "fields": {"password": record.secrets[name], "username": name}}
            record.answers.append(
                json.dumps(user.json("PUT", f"hetflow/api/credentials/{record.credentials[name]}", body))
            )
        for name, kernel in kernels.items():
            kernel.run("%load_ext hetflow").check()
            record.status[name] = kernel.run("%remote status").check().stdout
            kernel.run(
                f"%%remote name={name}_task_{marker}\nanswer = len({name!r}) * 7\nprint('log of {name}_{marker}')\n"
            ).check()
            record.values[name] = kernel.value("answer")
        for name, user in users.items():
            task = user.json("GET", f"hetflow/api/tasks/{name}_task_{marker}")["task"]
            record.tasks[name] = task
            sockets[name].wait_for(
                lambda seen, task=task: any(
                    e.get("task") == task["id"] and e.get("state") == "completed" for e in seen
                ),
                timeout=30,
            )
        sockets["alice"].wait(0.5)  # anything late, from either user
        record.events = {name: sockets[name].messages for name in NAMES}
        for user in users.values():
            for path in ("hetflow/api/tasks", "hetflow/api/credentials", "hetflow/api/graph", "hetflow/api/engine"):
                record.answers.append(user.request("GET", path).text)
        yield record
    finally:
        for name in NAMES:
            sockets[name].close()
            kernels[name].shutdown()


def other(name: str) -> str:
    return "bob" if name == "alice" else "alice"


def test_a_remote_cell_runs_on_each_users_server_and_its_value_lands_in_their_kernel(run: Run) -> None:
    assert run.values == {"alice": 35, "bob": 21}
    for name in NAMES:
        assert f"/user/{name}/hetflow/api/" in run.status[name], run.status[name]
        assert "JPY_PARENT_PID" in run.status[name], "the kernel did not find its own server's engine"
        assert run.tasks[name]["state"] == "completed" and run.tasks[name]["executor"] == "center-local"


def test_a_user_never_sees_another_users_tasks_in_the_api_or_the_event_stream(run: Run, users: dict[str, User]) -> None:
    for name, user in users.items():
        mine, theirs = run.tasks[name], run.tasks[other(name)]
        listed = {t["id"]: t["name"] for t in user.json("GET", "hetflow/api/tasks")["tasks"]}
        assert listed.get(mine["id"]) == mine["name"] and theirs["id"] not in listed
        assert theirs["name"] not in listed.values()
        assert user.request("GET", f"hetflow/api/tasks/{theirs['id']}").status_code == 404
        assert user.request("GET", f"hetflow/api/tasks/{theirs['name']}").status_code == 404
        assert theirs["id"] not in json.dumps(user.json("GET", "hetflow/api/graph"))
        events = run.events[name]
        states = [e["state"] for e in events if e.get("type") == "task" and e.get("task") == mine["id"]]
        assert states[-1] == "completed", f"{name} did not see their own task complete: {events}"
        assert any(e.get("type") == "log" and f"log of {name}_{run.marker}" in e["text"] for e in events)
        seen = json.dumps(events)
        assert theirs["id"] not in seen and f"{other(name)}_task_{run.marker}" not in seen
        assert f"log of {other(name)}_{run.marker}" not in seen


def test_a_user_never_sees_another_users_credential_names_nor_any_secret(run: Run, users: dict[str, User]) -> None:
    for name, user in users.items():
        shown = user.json("GET", "hetflow/api/credentials")["credentials"]
        names = {c["name"] for c in shown}
        assert run.credentials[name] in names and run.credentials[other(name)] not in names
        mine = next(c for c in shown if c["name"] == run.credentials[name])
        assert mine["kind"] == "password" and mine["public"] == {"username": name}
        assert run.credentials[other(name)] not in json.dumps(run.events[name])
    everything = "\n".join(run.answers) + json.dumps(run.events)
    for name in NAMES:
        assert run.secrets[name] not in everything, f"{name}'s secret was sent back"


def test_site_executors_are_everyones_and_a_users_own_executor_only_theirs(users: dict[str, User]) -> None:
    kernels = {}
    try:
        for name, user in users.items():
            assert set(user.json("GET", "hetflow/api/executors")["executors"]) == {"center-local", f"{name}-local"}
            kernels[name] = kernel = user.kernel()
            kernel.run("%load_ext hetflow").check()
            kernel.run(f"%%remote executor={name}-local cache=false\nwhere = {name!r}\n").check()
            assert kernel.value("where") == name
            refused = kernel.run(f"%%remote executor={other(name)}-local cache=false\nwhere = 'elsewhere'\n")
            assert not refused.ok, refused.stdout
            assert f"executor '{other(name)}-local' is not configured (configured: " in refused.stderr, refused.stderr
            assert sorted(refused.stderr.split("configured: ")[1].split(")")[0].split(", ")) == sorted(
                ["center-local", f"{name}-local"]
            )
            assert kernel.value("where") == name
    finally:
        for kernel in kernels.values():
            kernel.shutdown()


def test_requests_without_the_hubs_auth_are_refused(the_hub: Hub, run: Run, users: dict[str, User]) -> None:
    alice, bob = users["alice"], users["bob"]
    anonymous = User(the_hub, "alice", alice.loop)
    # a browser without the hub's cookie is sent to log in; an API call is refused outright
    page = anonymous.request("GET", "lab")
    assert page.url.startswith(f"{the_hub.url}/hub/login") and "hetflow" not in page.text
    for stranger in (anonymous, User(the_hub, "alice", alice.loop, token=uuid.uuid4().hex)):
        for method, path, body in (
            ("GET", "hetflow/api/tasks", None),
            ("GET", f"hetflow/api/tasks/{run.tasks['alice']['id']}", None),
            ("PUT", "hetflow/api/credentials/planted", {"kind": "token", "fields": {"token": "x"}}),
        ):
            answer = stranger.request(method, path, body, allow_redirects=False)
            assert answer.status_code == 403 and run.tasks["alice"]["id"] not in answer.text, (method, path)
    # bob's own token opens bob's server only
    as_bob = User(the_hub, "alice", alice.loop, token=bob.token)
    for path in ("hetflow/api/tasks", "hetflow/api/credentials", "api/kernels"):
        assert as_bob.request("GET", path).status_code == 403, path
    # alice's login cookie opens alice's server only (the hub's OAuth says no for bob's)
    peek = alice.http.get(f"{bob.base}hetflow/api/tasks", timeout=60)
    assert peek.status_code == 403 and run.tasks["bob"]["id"] not in peek.text
    # a cookie write without the XSRF header is refused (a page of another site could send the cookie)
    forged = alice.http.put(
        f"{alice.base}hetflow/api/credentials/forged",
        json={"kind": "token", "fields": {"token": "x"}},
        headers={"X-XSRFToken": ""},
        timeout=60,
    )
    assert forged.status_code == 403
    names = {c["name"] for c in alice.json("GET", "hetflow/api/credentials")["credentials"]}
    assert "planted" not in names and "forged" not in names
    # the event stream: nobody's but alice's own
    for stranger in (anonymous, as_bob):
        with pytest.raises(HTTPClientError) as refused:
            stranger.socket("hetflow/api/events")
        assert refused.value.code in (302, 401, 403)


def test_each_users_store_credentials_and_connection_file_live_in_their_own_home(
    the_hub: Hub, run: Run, users: dict[str, User]
) -> None:
    files: dict[str, list[Path]] = {}
    for name, user in users.items():
        home = (the_hub.homes / name).resolve()
        store = Path(user.json("GET", "hetflow/api/engine")["store"]).resolve()
        assert store == home / ".local/share/jupyter/hetflow" and store.stat().st_mode & 0o777 == 0o700
        credentials = store / "credentials.json"
        assert credentials.stat().st_mode & 0o777 == 0o600
        kept = json.loads(credentials.read_text())
        assert run.credentials[name] in kept and run.credentials[other(name)] not in kept
        pid = the_hub.api("GET", f"users/{name}")["servers"][""]["state"]["pid"]
        connection = home / ".local/share/jupyter/runtime" / f"hetflow-{pid}.json"
        assert connection.stat().st_mode & 0o777 == 0o600
        assert f"/user/{name}/hetflow/api/" in json.loads(connection.read_text())["url"]
        files[name] = [store, credentials, connection]
    for name in NAMES:
        their_home = (the_hub.homes / other(name)).resolve()
        assert not any(path.is_relative_to(their_home) for path in files[name])
    assert not set(files["alice"]) & set(files["bob"])
