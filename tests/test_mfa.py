"""Logins that want a one-time code after the key (MFA), against the real sshd with pam_google_authenticator that
`scripts/services.sh up` starts: the question reaches the user through the engine, once per connection."""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster import STATE, services
from tornado.httpclient import HTTPRequest
from tornado.ioloop import IOLoop
from tornado.websocket import websocket_connect

from kernels import Kernel
from servers import JupyterServer, notebook_kernel_fixture

WRONG = "hetflow-wrong-answer-5f2c"  # refused by PAM; distinctive, so a leak of any answer would be found


def totp(cluster: dict[str, str]) -> str:
    secret = Path(cluster["HETFLOW_MFA_SECRET_FILE"]).read_text().strip()
    return subprocess.run(
        ["oathtool", "--totp", "-b", secret], capture_output=True, text=True, check=True
    ).stdout.strip()


def mfa_executor(cluster: dict[str, str]) -> dict[str, Any]:
    return {
        "kind": "ssh",
        "host": cluster["HETFLOW_SSH_HOST"],
        "port": int(cluster["HETFLOW_MFA_PORT"]),
        "user": cluster["HETFLOW_SSH_USER"],
        "credential": "mfa-key",
        "known_hosts": cluster["HETFLOW_SSH_KNOWN_HOSTS"],
        "python": cluster["HETFLOW_REMOTE_PYTHON"],
        "remote_root": "~/.hetflow-mfa-tests",
        "poll_interval": 0.1,
    }


def logins(cluster: dict[str, str]) -> int:
    """Logins the MFA sshd accepted after a one-time code, from its own log."""
    log = STATE / "ssh" / "mfa" / "sshd.log"
    return log.read_text(errors="replace").count("Accepted keyboard-interactive/pam for " + cluster["HETFLOW_SSH_USER"])


class EventLog:
    """Every event the engine publishes, as a kernel receives them (the engine's token: not a sidebar)."""

    def __init__(self, server: JupyterServer):
        self.events: list[dict[str, Any]] = []
        self.raw: list[str] = []
        connection = server.connection
        url = connection["url"].replace("http", "ws", 1) + "events"
        self._request = HTTPRequest(url, headers={"Authorization": f"Bearer {connection['token']}"})
        self._loop: IOLoop | None = None
        self._ready = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()
        assert self._ready.wait(10), "the event socket did not open"

    def _run(self) -> None:
        self._loop = IOLoop()
        self._loop.run_sync(self._listen)

    async def _listen(self) -> None:
        socket = await websocket_connect(self._request)
        self._ready.set()
        while (message := await socket.read_message()) is not None:
            self.raw.append(str(message))
            self.events.append(json.loads(message))

    def questions(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == "prompt" and e["state"] == "open"]


def open_prompt(server: JupyterServer, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = server.json("GET", "hetflow/api/prompts")["prompts"]
        if found:
            return found[0]
        time.sleep(0.05)
    raise AssertionError("no login question was asked")


def wait_for_state(server: JupyterServer, name: str, state: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task = server.json("GET", f"hetflow/api/tasks/{name}")["task"]
        if task["state"] == state:
            return task
        time.sleep(0.1)
    raise AssertionError(f"task {name} did not become {state}")


@pytest.fixture(scope="module")
def cluster() -> dict[str, str]:
    return services()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, cluster: dict[str, str]) -> Iterator[JupyterServer]:
    executor = mfa_executor(cluster)
    s = JupyterServer(
        tmp_path_factory.mktemp("mfa-server"),
        hetflow={
            "executors": {"mfa": executor, "mfa-again": executor, "mfa-dismissed": executor},
            "prompt_timeout": 30,
        },
    )
    key = Path(cluster["HETFLOW_SSH_KEY"]).read_text()
    s.json("PUT", "hetflow/api/credentials/mfa-key", {"kind": "ssh-key", "fields": {"private_key": key}})
    yield s
    s.stop()


@pytest.fixture(scope="module")
def events(server: JupyterServer) -> EventLog:
    return EventLog(server)


kernel = notebook_kernel_fixture("mfa.ipynb")


@pytest.fixture(scope="module")
def answered(server: JupyterServer, kernel: Kernel, events: EventLog, cluster: dict[str, str]) -> dict[str, Any]:
    """A first task over the MFA host, its question answered through the API with the current code."""
    before = logins(cluster)
    msg_id, execution = kernel.start("%%remote executor=mfa cache=false\nimport getpass\nwho = getpass.getuser()\n")
    prompt = open_prompt(server)
    code = totp(cluster)
    status, _, body = server.request(
        "POST", f"hetflow/api/prompts/{prompt['id']}", body=json.dumps({"answers": [code]}).encode()
    )
    assert status == 204, body
    out = kernel.collect(msg_id, execution, timeout=60)
    return {"prompt": prompt, "code": code, "out": out, "logins": logins(cluster) - before}


def test_a_task_over_an_mfa_host_runs_once_the_code_is_answered(answered: dict[str, Any], kernel: Kernel) -> None:
    answered["out"].check()
    assert kernel.value("who") == "testuser"
    prompt = answered["prompt"]
    assert prompt["executor"] == "mfa" and "2223" in prompt["host"]
    assert [f["echo"] for f in prompt["fields"]] == [False] and "Verification code" in prompt["fields"][0]["text"]
    assert answered["logins"] == 1


def test_twenty_more_tasks_reuse_the_connection_without_asking_again(
    answered: dict[str, Any], server: JupyterServer, kernel: Kernel, events: EventLog, cluster: dict[str, str]
) -> None:
    before = logins(cluster)
    kernel.run("%%remote executor=mfa foreach=i:range(20) cache=false\nsquare = i * i\n", timeout=120).check()
    assert kernel.value("square") == [i * i for i in range(20)]
    assert logins(cluster) == before
    assert len(events.questions()) == 1
    assert server.json("GET", "hetflow/api/prompts")["prompts"] == []


def test_a_dropped_connection_asks_again_when_it_is_opened_again(
    answered: dict[str, Any], server: JupyterServer, kernel: Kernel, events: EventLog, cluster: dict[str, str]
) -> None:
    # every session process of the MFA sshd (the privileged monitor and the user's): the connections drop
    subprocess.run(["pkill", "-KILL", "-f", f"^hetflow-mfa: {cluster['HETFLOW_SSH_USER']}"], check=True)
    before, asked = logins(cluster), len(events.questions())
    msg_id, execution = kernel.start("%%remote executor=mfa cache=false\nafter_drop = 'ran'\n")
    prompt = open_prompt(server)
    server.json("POST", f"hetflow/api/prompts/{prompt['id']}", {"answers": [totp(cluster)]})
    kernel.collect(msg_id, execution, timeout=60).check()
    assert kernel.value("after_drop") == "ran"
    assert logins(cluster) == before + 1 and len(events.questions()) == asked + 1


def test_the_question_event_names_the_waiting_task_and_closes_once_answered(
    answered: dict[str, Any], server: JupyterServer, events: EventLog
) -> None:
    opened = events.questions()[0]
    task = server.json("GET", "hetflow/api/tasks/who")["task"]
    assert opened["tasks"] == [task["id"]] and opened["prompt"]["id"] == answered["prompt"]["id"]
    closed = [e for e in events.events if e["type"] == "prompt" and e["state"] == "closed"]
    assert [e["prompt"]["id"] for e in closed][:1] == [opened["prompt"]["id"]]


def test_a_wrong_code_fails_clearly_and_a_rerun_asks_again(
    server: JupyterServer, kernel: Kernel, cluster: dict[str, str]
) -> None:
    msg_id, execution = kernel.start("%%remote executor=mfa-again name=again cache=false\nagain = 'ran'\n")
    prompt = open_prompt(server)
    server.json("POST", f"hetflow/api/prompts/{prompt['id']}", {"answers": [WRONG]})
    out = kernel.collect(msg_id, execution, timeout=60)
    assert not out.ok
    assert "AnswerRefused" in out.traceback and "refused the answer to its login question" in out.traceback
    assert "run the task again to be asked anew" in out.traceback

    msg_id, execution = kernel.start("%remote rerun again")
    prompt = open_prompt(server)
    server.json("POST", f"hetflow/api/prompts/{prompt['id']}", {"answers": [totp(cluster)]})
    assert "re-running 1 task(s): again" in kernel.collect(msg_id, execution, timeout=60).check().stdout
    assert wait_for_state(server, "again", "completed")["error"] is None


def test_a_dismissed_question_fails_the_waiting_task_clearly(server: JupyterServer, kernel: Kernel) -> None:
    msg_id, execution = kernel.start("%%remote executor=mfa-dismissed cache=false\nx = 1\n")
    prompt = open_prompt(server)
    status, _, body = server.request(
        "POST", f"hetflow/api/prompts/{prompt['id']}", body=json.dumps({"answers": ["1", "2"]}).encode()
    )
    assert status == 400 and b"one per question" in body  # still open: a bad answer is not a wrong code
    status, _, _ = server.request("DELETE", f"hetflow/api/prompts/{prompt['id']}")
    assert status == 204
    out = kernel.collect(msg_id, execution, timeout=60)
    assert "asked at login and got no answer: the question was dismissed" in out.traceback


def test_answers_are_refused_for_a_question_no_longer_open(server: JupyterServer) -> None:
    status, _, body = server.request(
        "POST", "hetflow/api/prompts/0123456789ab", body=json.dumps({"answers": ["1"]}).encode()
    )
    assert status == 404 and b"no open prompt" in body
    status, _, _ = server.request("GET", "hetflow/api/prompts", auth=None)
    assert status == 403


def test_no_answer_is_kept_in_the_store_logs_or_events(
    answered: dict[str, Any], server: JupyterServer, events: EventLog
) -> None:
    """Run after the wrong-code test: its distinctive answer went through the same path as the right code."""
    places = {path: path.read_bytes() for path in server.store.rglob("*") if path.is_file()}
    places[server.root / "server.log"] = (server.root / "server.log").read_bytes()
    places[Path("events")] = "\n".join(events.raw).encode()
    code = re.compile(rb"(?<!\d)" + answered["code"].encode() + rb"(?!\d)")
    for path, data in places.items():
        assert WRONG.encode() not in data, f"an answer is kept in {path}"
        assert not code.search(data), f"the one-time code is kept in {path}"
    assert any(e["type"] == "prompt" for e in events.events)


def test_with_no_sidebar_the_waiting_cell_asks_for_the_code(tmp_path: Path, cluster: dict[str, str]) -> None:
    """An engine embedded in the kernel (no server, no sidebar): the cell asks, with hidden input."""
    kernel = Kernel.local(tmp_path, {"executors": {"mfa": mfa_executor(cluster)}})
    try:
        key = Path(cluster["HETFLOW_SSH_KEY"]).read_text()
        kernel.run(
            "from hetflow.client import get_client as _g\n"
            "_c = _g(); _c.on_loop(_c.engine.credentials.put, 'mfa-key', 'ssh-key', {'private_key': " + repr(key) + "})"
        ).check()
        out = kernel.run(
            "%%remote executor=mfa cache=false\nhere = 'asked in the cell'\n",
            answer=lambda prompt, password: totp(cluster),
        ).check()
        assert kernel.value("here") == "asked in the cell"
        assert len(out.inputs) == 1
        assert out.inputs[0]["password"] is True and "Verification code" in out.inputs[0]["prompt"]
        assert "2223" in out.inputs[0]["prompt"]
    finally:
        kernel.shutdown()
