"""The security suite (issue 20, item 8): every route the server extension registers, as the extension app builds
them (HetflowApp.initialize_handlers, not a list of ours), against a real Jupyter server.

- every method of every route refuses a caller with no token, a wrong one, a forged cookie; every write refuses a
  browser cookie session without its XSRF token; the event socket refuses no token and a foreign Origin (with a
  cookie or the engine's token; Jupyter lets a request carrying its own token in from anywhere, which no other
  site's page can forge); and none of the refused calls changed anything (the store, as seen by an authorised
  caller, is the same after);
- `../`, `%2e%2e%2f`, absolute paths and NUL bytes in every id/name parameter get a clean 4xx, never a 500, and no
  file outside the store is read or written;
- a 10 MB body to every POST/PUT is refused (413 or 400) and the server stays up; malformed JSON and JSON of the
  wrong types get a clean 400 with a message;
- after tasks that used credentials (a token the task prints, an SSH key the engine logs in with), none of the
  secrets' bytes (nor their base64 or hex) is in any file of the server's dirs, its log, or the saved notebook.
"""

from __future__ import annotations

import base64
import binascii
import inspect
import json
import os
import re
import secrets
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import nbformat
import pytest
from cluster import services, ssh
from test_credentials import collect_events
from test_mfa import mfa_executor, open_prompt, wait_for_state
from tornado import web, websocket

from hetflow_server.extension import HetflowApp
from hetflow_server.protocol import TASK_MEDIA_TYPE
from hetflow_server.store import SMALL_BLOB
from kernels import Execution, Kernel
from servers import JupyterServer

METHODS = ("get", "post", "put", "delete", "patch")
WRITES = ("POST", "PUT", "DELETE", "PATCH")
REFUSED = (401, 403)
MB = 1024 * 1024
# the groups of a route's pattern, by the path segment before them; a route with a new kind of group fails here
PARAMS = {
    "tasks/": "task",
    "executors/": "executor",
    "allocations/": "allocation",
    "credentials/": "credential",
    "prompts/": "prompt",
}
# a body each JSON route accepts, by the segment before its parameter (a new JSON route fails until it has one)
GOOD_BODIES: dict[str, Any] = {
    "credentials/": {"kind": "token", "fields": {"token": "planted-token"}},
    "prompts/": {"answers": ["000000"]},
    "api/clean": {"keep_days": 90},  # forgets nothing the suite made
}
MARKER = "security-marker-" + secrets.token_hex(4)  # in every cell's code: a refused answer must not carry it
SECRET = "tok-" + secrets.token_urlsafe(24)  # the token a task prints (built in the kernel from two halves)


def registered() -> list[tuple[str, type[web.RequestHandler]]]:
    """The routes exactly as the extension app registers them with the server."""
    app = HetflowApp()
    app.initialize_handlers()
    return [(spec[0], spec[1]) for spec in app.handlers]


ROUTES = registered()


@dataclass(frozen=True)
class Call:
    """One method of one route, its groups named (`task`, `executor`...) and one alternation word chosen."""

    method: str
    pattern: str
    handler: type[web.RequestHandler]
    parts: tuple[str, ...]  # literal text and "{param}" placeholders, in order
    word: str | None = None  # the alternation's word (an action: cancel, retry, rerun)

    @property
    def params(self) -> list[str]:
        return [p[1:-1] for p in self.parts if p.startswith("{") and p.endswith("}")]

    @property
    def websocket(self) -> bool:
        return issubclass(self.handler, websocket.WebSocketHandler)

    @property
    def source(self) -> str:
        """The method's source, and that of the module's functions it calls (`_page(self)` reads arguments too)."""
        names = [self.method.lower(), *(["open"] if self.websocket else [])]  # a socket reads them on open
        method = "\n".join(inspect.getsource(getattr(self.handler, name)) for name in names)
        module = inspect.getmodule(self.handler)
        called = {name: getattr(module, name, None) for name in re.findall(r"\b(\w+)\(", method)}
        return "\n".join([method, *(inspect.getsource(f) for f in called.values() if inspect.isfunction(f))])

    @property
    def submission(self) -> bool:
        return "TASK_MEDIA_TYPE" in self.source

    @property
    def reads_json(self) -> bool:
        return "json_body(" in self.source

    @property
    def json_kind(self) -> str:
        """Which of GOOD_BODIES and WRONG_TYPES a JSON route takes: the segment before its parameter."""
        path = "".join(self.parts)
        found = [prefix for prefix in GOOD_BODIES if prefix in path]
        assert len(found) == 1, f"{self}: a JSON route with no body of its own in GOOD_BODIES and WRONG_TYPES"
        return found[0]

    def path(self, values: dict[str, str]) -> str:
        return "".join(values[p[1:-1]] if p.startswith("{") and p.endswith("}") else p for p in self.parts)

    def __str__(self) -> str:
        return f"{self.method} {''.join(self.parts)}"


def calls() -> list[Call]:
    """Every method each registered route's handler answers (not tornado's default 405), with each word of an
    alternation as a call of its own."""
    found = []
    for pattern, handler in ROUTES:
        methods = [m.upper() for m in METHODS if getattr(handler, m) is not getattr(web.RequestHandler, m)]
        assert methods, f"{pattern}: a route without a method"
        variants: list[tuple[list[str], str | None]] = [([], None)]
        rest = pattern
        while (group := re.search(r"\(([^)]*)\)[+*]?", rest)) is not None:
            literal, inner, rest = rest[: group.start()], group.group(1), rest[group.end() :]
            if re.fullmatch(r"\w+(\|\w+)+", inner):  # an alternation: one call per word
                variants = [([*parts, literal + word], word) for parts, _ in variants for word in inner.split("|")]
                continue
            before = "".join(variants[0][0]) + literal
            kind = next((name for prefix, name in PARAMS.items() if before.endswith(prefix)), None)
            assert kind, f"no parameter kind for the group after {before!r} in {pattern}; add it to PARAMS"
            variants = [([*parts, literal, "{" + kind + "}"], word) for parts, word in variants]
        for parts, word in variants:
            found += [Call(m, pattern, handler, tuple([*parts, rest]), word) for m in methods]
    return found


CALLS = calls()


def websocket_headers(**extra: str) -> dict[str, str]:
    return {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        **extra,
    }


def cluster_or_none() -> dict[str, str] | None:
    """The sshd of `scripts/services.sh up` (a real SSH key login, a real login question), if it runs; in CI
    (HETFLOW_REQUIRE_SERVICES=1) its absence fails."""
    try:
        return services()
    except pytest.skip.Exception:
        return None


@dataclass
class World:
    server: JupyterServer
    kernel: Kernel
    cluster: dict[str, str] | None
    ids: dict[str, str]  # completed, failed, running, fan (a foreach's name), credential, prompt, executor
    cells: list[Execution]
    outside: Path  # a file next to the store that no probe may read or change

    @property
    def real(self) -> dict[str, str]:
        return {
            "executor": self.ids["executor"],
            "allocation": "no-such-allocation",
            "credential": self.ids["credential"],
            "prompt": self.ids["prompt"],
        }

    def values(self, call: Call) -> dict[str, str]:
        """Real ids for a call's groups, chosen so that an accepted call would change something."""
        task = {"cancel": "running", "retry": "failed", "rerun": "completed"}.get(call.word or "", "completed")
        if call.parts[-1].endswith("/results"):
            task = "fan"
        return {**self.real, "task": self.ids[task]}

    def submission(self, **spec: Any) -> bytes:
        """A submission the engine accepts (cache=false: each one accepted is a new task)."""
        head = {"code": f"planted = 1  # {MARKER}", "inputs": {}, "outputs": ["planted"], "name": "planted"}
        return json.dumps({**head, "cache": False, **spec}).encode() + b"\n" + b"payload"

    def body(self, call: Call) -> tuple[bytes | None, dict[str, str]]:
        """A body that would have an effect if the call were let in (None for calls that take none)."""
        if call.submission:
            return self.submission(), {"Content-Type": TASK_MEDIA_TYPE}
        if call.reads_json:
            return json.dumps(GOOD_BODIES[call.json_kind]).encode(), {}
        return (b"" if call.method in ("POST", "PUT") else None), {}

    def snapshot(self) -> dict[str, Any]:
        """What a refused call must leave as it was, seen by an authorised caller."""
        server = self.server
        tasks = server.json("GET", "hetflow/api/tasks")["tasks"]
        return {
            "tasks": sorted(json.dumps(t, sort_keys=True) for t in tasks),
            "credentials": server.json("GET", "hetflow/api/credentials"),
            "prompts": server.json("GET", "hetflow/api/prompts"),
            "blobs": sorted(str(p) for p in (server.store / "blobs").rglob("*")),
            "outside": self.outside.read_bytes(),
        }


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    cluster = cluster_or_none()
    executors: dict[str, Any] = {"local": {"kind": "local", "workers": 2}}
    if cluster:  # test_mfa's executor (a one-time code after the key), and the same without the code
        mfa = {**mfa_executor(cluster), "credential": "cluster-key", "remote_root": "~/.hetflow-security-tests"}
        executors |= {"mfa": mfa, "over-ssh": {**mfa, "port": int(cluster["HETFLOW_SSH_PORT"])}}
    root = tmp_path_factory.mktemp("security")
    server = JupyterServer(root, base_url="/user/sec/", hetflow={"executors": executors, "prompt_timeout": 120})
    outside = root / "outside" / "sentinel.txt"
    outside.parent.mkdir()
    outside.write_text("sentinel " + secrets.token_hex(16))
    kernel = server.notebook_kernel("security.ipynb")
    try:
        server.json("PUT", "hetflow/api/credentials/api-token", {"kind": "token", "fields": {"token": "x" * 16}})
        cells = [
            kernel.run(f"%%remote name=done\n# {MARKER}\ndone = 1\n").check(),
            kernel.run(f"%%remote name=broken cache=false\n# {MARKER}\nraise ValueError('boom')\n"),
            kernel.run(f"%%remote name=fan foreach=k:[1,2]\n# {MARKER}\nsquare = k * k\n").check(),
            kernel.run(f"%%remote name=sleeper cache=false wait=false\n# {MARKER}\nimport time\ntime.sleep(600)\n"),
        ]
        ids = {
            "completed": wait_for_state(server, "done", "completed")["id"],
            "failed": wait_for_state(server, "broken", "failed")["id"],
            "running": wait_for_state(server, "sleeper", "running")["id"],
            "fan": "fan",
            "credential": "api-token",
            "executor": "local",
            "prompt": "0123456789ab",  # no open question without the sshd: the refusal comes before the lookup
        }
        if cluster:
            key = Path(cluster["HETFLOW_SSH_KEY"]).read_text()
            server.json(
                "PUT", "hetflow/api/credentials/cluster-key", {"kind": "ssh-key", "fields": {"private_key": key}}
            )
            cells.append(kernel.run("%%remote executor=mfa name=asking cache=false wait=false\nasked = 1\n"))
            ids["prompt"] = open_prompt(server)["id"]
        yield World(server, kernel, cluster, ids, cells, outside)
    finally:  # a test that failed before the control leaves the sleeper running and the question open
        server.request("POST", "hetflow/api/tasks/sleeper/cancel")
        for prompt in json.loads(server.request("GET", "hetflow/api/prompts")[2] or b"{}").get("prompts", []):
            server.request("DELETE", f"hetflow/api/prompts/{prompt['id']}")
        kernel.shutdown()
        server.stop()


def test_the_calls_are_every_route_and_method_the_app_registers(world: World) -> None:
    """The enumeration is the app's own, and the running server serves each call (with valid auth, none is a
    routing 404: the refusals below are about auth, not about a path the server does not know)."""
    assert len({c.pattern for c in CALLS}) == len(ROUTES) and len(ROUTES) >= 17
    assert {(c.handler, c.method) for c in CALLS} == {
        (h, m.upper()) for _, h in ROUTES for m in METHODS if getattr(h, m) is not getattr(web.RequestHandler, m)
    }
    server = world.server
    for call in CALLS:
        if call.method != "GET":
            continue  # writes are let in by the last control test, once nothing they change matters
        headers = websocket_headers() if call.websocket else {}
        status, _, data = server.request("GET", call.path(world.values(call)), auth="engine", headers=headers)
        assert status not in (*REFUSED, 405) and not is_routing_404(status, data), f"{call}: {status} {data[:200]!r}"


def is_routing_404(status: int, data: bytes) -> bool:
    """Jupyter's HTML 404 for a path no handler matches (hetflow's own 404s are JSON with a message)."""
    return status == 404 and not data.startswith(b"{")


def browser_login(server: JupyterServer) -> tuple[str, str]:
    """Log in as a browser does (the token in the URL once): the session cookies, and the XSRF token."""
    status, headers, _ = server.request("GET", f"?token={server.token}", auth=None)
    cookies = "; ".join(c.split(";")[0] for c in headers.get_all("Set-Cookie") or [])
    xsrf = re.search(r"_xsrf=([^;]+)", cookies)
    assert status in (200, 302) and xsrf and "username-" in cookies, cookies
    return cookies, xsrf.group(1)


def test_every_route_refuses_without_auth_and_every_write_without_xsrf(world: World) -> None:
    """Each call, with real ids and a body that would change something, from each kind of stranger: a 401/403
    (Jupyter answers the API with 403, also to a browser, rather than a redirect to its login page), an answer
    that carries nothing of the store's, and the store as it was."""
    server = world.server
    cookies, xsrf = browser_login(server)
    wrong_xsrf = f"2|{secrets.token_hex(4)}|{secrets.token_hex(16)}|1700000000"  # tornado's form, another token
    forged = re.sub(r"(username-[^=]+=)[^;]+", r"\1" + '"2|1:0|10:1700000000|forged"', cookies)
    engine_token = server.connection["token"]
    host = f"127.0.0.1:{server.port}"
    # who calls: (Authorization header or None, extra headers, query string)
    strangers: dict[str, tuple[str | None, dict[str, str], str]] = {
        "no token": (None, {}, ""),
        "no token, a browser asking for a page": (None, {"Accept": "text/html"}, ""),
        "a wrong Jupyter token": (f"token {secrets.token_hex(16)}", {}, ""),
        "a wrong engine token": (f"Bearer {secrets.token_urlsafe(32)}", {}, ""),
        "the engine token cut short": (f"Bearer {engine_token[:-1]}", {}, ""),
        "the engine token as a Jupyter token": (f"token {engine_token}", {}, ""),
        "a wrong token in the URL": (None, {}, f"?token={secrets.token_hex(16)}"),
        "a forged session cookie": (None, {"Cookie": forged}, ""),
        "the XSRF token without the session": (None, {"Cookie": f"_xsrf={xsrf}", "X-XSRFToken": xsrf}, ""),
    }
    cross_site: dict[str, tuple[str | None, dict[str, str], str]] = {
        "a cookie session without XSRF": (None, {"Cookie": cookies}, ""),
        "a cookie session with a wrong XSRF": (None, {"Cookie": cookies, "X-XSRFToken": wrong_xsrf}, ""),
        "a cookie session, XSRF in the URL wrong": (None, {"Cookie": cookies}, f"?_xsrf={wrong_xsrf}"),
    }
    foreign = {"Origin": "https://attacker.example", "Host": host}
    sockets: dict[str, tuple[str | None, dict[str, str], str]] = {
        "a cookie session from a foreign Origin": (None, {"Cookie": cookies, **foreign}, ""),
        "the engine token from a foreign Origin": (f"Bearer {engine_token}", foreign, ""),
    }
    before = world.snapshot()
    refusals, probes, patterns = 0, set(), set()
    for call in CALLS:
        body, content = world.body(call)
        who = dict(strangers)
        if call.method in WRITES:
            who |= cross_site
        if call.websocket:
            who |= sockets
        for name, (auth, extra, query) in who.items():
            headers = {**content, **extra, **(websocket_headers() if call.websocket else {})}
            status, answer, data = server.request(
                call.method, call.path(world.values(call)) + query, auth=auth, body=body, headers=headers
            )
            to_login = status == 302 and call.method == "GET" and "/login" in answer.get("Location", "")
            assert status in REFUSED or to_login, f"{call} with {name}: {status} {data[:300]!r}"
            assert MARKER.encode() not in data and world.ids["completed"].encode() not in data, f"{call}: {data!r}"
            refusals += 1
            probes.add(name)
            patterns.add(call.pattern)
    after = world.snapshot()
    assert after == before, "a refused call changed the store"
    assert len(patterns) == len(ROUTES)
    print(
        f"\nsecurity: {len(patterns)} routes ({len(CALLS)} methods) x {len(probes)} probes = {refusals} refusals "
        f"checked; {len(after['tasks'])} tasks before and after, the store unchanged"
    )


def query_arguments(call: Call) -> list[str]:
    """The query arguments a call's handler reads (from its source: a new argument is probed without a list)."""
    return re.findall(r'get_argument\(\s*"(\w+)"', call.source)


def count_arguments(call: Call) -> set[str]:
    """The query arguments it reads as counts (offsets and limits)."""
    return set(re.findall(r'_count\((?:self\.get_argument\([^)]*\)|\w+),\s*"(\w+)"', call.source))


def outside_the_store(world: World) -> dict[str, tuple[int, int]]:
    """Every file of the server's root but the store, the runtime dir and the log: none may appear or change."""
    root, skip = world.server.root, (world.server.store, world.server.runtime, world.server.root / "server.log")
    return {
        str(p): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file() and not any(p == s or s in p.parents for s in skip)
    }


def traversals(world: World) -> list[str]:
    """Raw URL text for a path segment: dot segments, encoded slashes, absolute paths, NUL bytes, and the way to
    the sentinel next to the store from the store and from its subdirectories."""
    sentinel = world.outside
    relative = [os.path.relpath(sentinel, world.server.store / sub) for sub in ("", "logs", "blobs/ab")]
    return [
        "..",
        "...",
        "../..",
        "../../../../../../etc/passwd",
        "..%2f..%2f..%2fetc%2fpasswd",
        "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "%2e%2e",
        "..%5c..%5cwindows",
        "/etc/passwd",
        "%2fetc%2fpasswd",
        str(sentinel),
        *relative,
        *(r.replace("/", "%2f") for r in relative),
        "x%00",
        "%00",
        "..%00",
        "%00..%2f..%2fetc%2fpasswd",
    ]


def leaked(world: World, data: bytes) -> bool:
    """A file's bytes from outside the store in an answer (tasks' own code may be in it: the caller is let in)."""
    return world.outside.read_bytes() in data or b"root:x:0:0" in data


def test_traversal_and_nul_bytes_in_every_parameter_are_a_clean_4xx(world: World) -> None:
    server = world.server
    evil = traversals(world)
    before, outside = world.snapshot(), outside_the_store(world)
    probes = 0
    for call in CALLS:
        body, content = world.body(call)
        values = world.values(call)
        for param in call.params:
            for value in evil:
                path = call.path({**values, param: value})
                status, _, data = server.request(call.method, path, auth="engine", body=body, headers=content)
                assert 400 <= status < 500, f"{call} with {param}={value!r}: {status} {data[:300]!r}"
                assert not leaked(world, data), f"{call} with {param}={value!r}: {data[:300]!r}"
                probes += 1
        for argument in query_arguments(call):
            for value in evil:
                path = f"{call.path(values)}?{argument}={value}"
                headers = {**content, **(websocket_headers() if call.websocket else {})}
                status, _, data = server.request(call.method, path, auth="engine", body=body, headers=headers)
                # a filter that matches nothing is an answer too, but never a 500 nor a file's bytes
                assert status < 500, f"{call} with ?{argument}={value!r}: {status} {data[:300]!r}"
                assert not leaked(world, data), f"{call} with ?{argument}={value!r}: {data[:300]!r}"
                if call.websocket and status == 101:
                    continue
                probes += 1
    # the names a submission carries (task name, notebook, executor, dependencies...) are data, never paths
    submit = next(c for c in CALLS if c.submission)
    completed = world.ids["completed"]
    fields = {
        "name": lambda v: {"name": v},
        "notebook": lambda v: {"notebook": v},
        "cell_id": lambda v: {"cell_id": v},
        "executor": lambda v: {"executor": v},
        "after": lambda v: {"after": [v]},
        "refs (task id)": lambda v: {"inputs": {}, "refs": {"x": [v, "done"]}},
        "refs (output)": lambda v: {"refs": {"x": [completed, v]}},
        "foreach": lambda v: {"foreach": v, "element_sizes": [1]},
    }
    spelled = [unquote(v) for v in evil] + ["a\x00b", "\x00"]
    accepted = 0
    for field, make in fields.items():
        for value in spelled:
            body = world.submission(**make(value))
            status, _, data = server.request(
                "POST", submit.path({}), auth="engine", body=body, headers={"Content-Type": TASK_MEDIA_TYPE}
            )
            assert status < 500, f"{submit} with {field}={value!r}: {status} {data[:300]!r}"
            assert not leaked(world, data), f"{field}={value!r}: {data[:300]!r}"
            if status < 300:  # kept as the text it is
                task = json.loads(data)["task"]
                key = field.split(" ")[0]
                if key in ("name", "notebook", "cell_id"):
                    assert task[key] == value or (key == "notebook" and os.path.isabs(value)), (field, value, task)
                accepted += 1
            else:
                assert json.loads(data)["message"], data
            probes += 1
    assert outside_the_store(world) == outside, "a probe wrote a file outside the store"
    assert world.snapshot()["outside"] == before["outside"]
    print(
        f"\nsecurity: traversal/NUL: {probes} probes over {sum(len(c.params) for c in CALLS)} path parameters, "
        f"{sum(len(query_arguments(c)) for c in CALLS)} query arguments and {len(fields)} submission fields "
        f"({accepted} submissions kept the name as text); nothing outside the store touched"
    )


def alive(server: JupyterServer) -> None:
    started = time.monotonic()
    status, _, _ = server.request("GET", "hetflow/api/engine", auth="engine")
    assert status == 200 and time.monotonic() - started < 5, "the server did not answer after a big body"


def message(status: int, data: bytes) -> str:
    """The JSON answer's message (the clean 4xx the API gives), or an assertion naming what came instead."""
    try:
        found = json.loads(data)["message"]
    except (ValueError, KeyError, TypeError):
        raise AssertionError(f"{status} without a JSON message: {data[:300]!r}") from None
    assert isinstance(found, str) and found, data[:300]
    return found


def test_a_10_mb_body_to_every_post_and_put_is_refused_and_the_server_stays_up(world: World) -> None:
    server = world.server
    before = world.snapshot()
    junk = b"\xff" * (10 * MB)
    big_json = json.dumps({"kind": "token", "fields": {"token": "y" * (10 * MB)}, "answers": ["0" * (10 * MB)]})
    checked = 0
    for call in CALLS:
        if call.method not in ("POST", "PUT"):
            continue
        content = {"Content-Type": TASK_MEDIA_TYPE} if call.submission else {}
        bodies = {"10 MB of junk": junk}
        if call.reads_json:
            bodies["a 10 MB JSON object"] = big_json.encode()
        if call.submission:  # a valid line of 10 MB that is no task spec (a big payload after it is a big input)
            bodies["a 10 MB spec line"] = json.dumps({"code": "x" * (10 * MB), "bogus": 1}).encode() + b"\n"
        for name, body in bodies.items():
            status, _, data = server.request(
                call.method, call.path(world.values(call)), auth="engine", body=body, headers=content
            )
            assert status in (400, 413), f"{call} with {name}: {status} {data[:300]!r}"
            message(status, data)
            alive(server)
            checked += 1
    assert world.snapshot() == before, "a refused big body changed the store"
    print(f"\nsecurity: {checked} bodies of 10 MB refused (413 or 400), the server up after each")


# wrong types for each JSON route, like GOOD_BODIES; each is valid JSON
WRONG_TYPES: dict[str, list[Any]] = {
    "credentials/": [
        {"kind": 5},
        {"kind": ["token"]},
        {"kind": {"token": 1}},
        {"kind": None, "fields": {}},
        {"kind": "token", "fields": []},
        {"kind": "token", "fields": "abc"},
        {"kind": "token", "fields": {"token": 12345}},
        {"kind": "token", "fields": {"token": ["a", "b"]}},
        {"kind": "token", "fields": {"token": None}},
    ],
    "prompts/": [{"answers": "000000"}, {"answers": [0]}, {"answers": {"a": "b"}}, {"answers": None}, {}],
    "api/clean": [
        {"keep_days": "30"},
        {"keep_days": True},
        {"keep_days": -1},
        {"keep_days": 1e308},
        {"keep_days": float("nan")},
        {"keep_days": [1]},
    ],
}
WRONG_SPECS: list[Any] = [
    [],
    "x = 1",
    42,
    None,
    {"code": 5},
    {"code": ["x = 1"]},
    {"inputs": []},
    {"inputs": {"x": 1}},
    {"outputs": "x"},
    {"options": {"partition": 1}},
    {"options": []},
    {"retries": "3"},
    {"retries": -1},
    {"retries": 1.5},
    {"retries": True},
    {"retries": 2**63},
    {"retries": 10**30},
    {"timeout": "60"},
    {"timeout": -1},
    {"timeout": 1e308},
    {"timeout": float("inf")},  # JSON's Infinity: stored, it made every task list unreadable to JSON.parse
    {"timeout": float("nan")},
    {"timeout": False},
    {"cache": "false"},
    {"bring": 1},
    {"executor": 5},
    {"name": "n" * 10_000_000},  # a 10 MB name made %remote status print 80 MB
    {"name": ""},
    {"executor": "e" * 1000},
    {"notebook": "n" * 100_000},
    {"cell_id": "c" * 1000},
    {"notebook": ["a.ipynb"]},
    {"cell_id": 7},
    {"after": "done"},
    {"after": [1]},
    {"refs": []},
    {"refs": {"x": "abc"}},
    {"refs": {"x": [1, 2]}},
    {"origins": {"x": ["a"]}},
    {"foreach": 1, "element_sizes": [1]},
    {"foreach": "not an identifier", "element_sizes": [1]},
    {"foreach": "k", "element_sizes": "1"},
    {"foreach": "k", "element_sizes": [-1]},
    {"foreach": "k", "element_sizes": [10**30]},
    {"foreach": "k"},
    {"element_sizes": [1]},
    {"no_such_field": 1},
]
MALFORMED = [
    b"{",
    b"{'kind': 'token'}",
    b"[1, 2",
    b'{"a": 1}{"b": 2}',
    b"\xff\xfe\x00",
    b"nul\x00l",
    b"[]",
    b'"a"',
    b"3",
]
BAD_COUNTS = ["abc", "-1", "1.5", "1e3", "0x10", "99999999999999999999999", str(2**63), "1%002"]  # each a 400
ODD_COUNTS = ["", "%00", str(2**40)]  # the default (tornado strips control characters), or too big to read at once


def test_malformed_json_wrong_types_and_bad_numbers_are_a_clean_400(world: World) -> None:
    server = world.server
    before = world.snapshot()
    checked = 0
    for call in CALLS:
        path = call.path(world.values(call))
        if call.reads_json:
            kind = call.json_kind
            for body in [*MALFORMED, *(json.dumps(b).encode() for b in WRONG_TYPES[kind])]:
                status, _, data = server.request(call.method, path, auth="engine", body=body)
                # a prompt that is not open (no sshd here) is a 404 before its body matters
                expected = (400,) if world.cluster or kind != "prompts/" else (400, 404)
                assert status in expected, f"{call} with {body[:80]!r}: {status} {data[:300]!r}"
                message(status, data)
                checked += 1
        if call.submission:
            base = json.loads(world.submission().partition(b"\n")[0])
            heads = [
                *MALFORMED,
                *(json.dumps(s if not isinstance(s, dict) else {**base, **s}).encode() for s in WRONG_SPECS),
            ]
            for head in heads:
                body = head + b"\n" + b"payload"
                status, _, data = server.request(
                    "POST", path, auth="engine", body=body, headers={"Content-Type": TASK_MEDIA_TYPE}
                )
                assert status == 400, f"{call} with {head[:120]!r}: {status} {data[:300]!r}"
                message(status, data)
                checked += 1
            for content in ("application/json", "", "application/x-hetflow-task; charset=evil"):
                status, _, data = server.request(
                    "POST", path, auth="engine", body=world.submission(), headers={"Content-Type": content}
                )
                assert status == 400, f"{call} as {content!r}: {status} {data[:300]!r}"
                checked += 1
        for argument in query_arguments(call):
            numeric = argument in count_arguments(call)
            for value in [*BAD_COUNTS, *ODD_COUNTS, "bogus", "running,bogus"]:
                headers = websocket_headers() if call.websocket else {}
                status, _, data = server.request(
                    call.method, f"{path}?{argument}={value}", auth="engine", headers=headers
                )
                assert status < 500, f"{call} with ?{argument}={value!r}: {status} {data[:300]!r}"
                if numeric and value in BAD_COUNTS:
                    assert status == 400, f"{call} with ?{argument}={value!r}: {status} {data[:300]!r}"
                    message(status, data)
                checked += 1
    assert world.snapshot()["credentials"] == before["credentials"], "a refused credential was stored"
    print(f"\nsecurity: {checked} malformed, mistyped or out-of-range inputs: a clean 4xx with a message, no 500")


def test_the_same_calls_with_good_credentials_are_let_in(world: World) -> None:
    """The control, once the probes above are done (it changes what they must not): the same calls, bodies and ids
    from a browser session with its XSRF token (and the socket also with either token) pass: what was refused above
    was refused for its credentials, not for its path or body."""
    server = world.server
    cookies, xsrf = browser_login(server)
    host = f"127.0.0.1:{server.port}"
    before = world.snapshot()
    for call in CALLS:
        body, content = world.body(call)
        if call.websocket:
            for auth, headers in (
                (None, {"Cookie": cookies, "Origin": f"http://{host}"}),
                ("engine", {}),
                ("jupyter", {}),
            ):
                status, _, _ = server.request("GET", call.path({}), auth=auth, headers=websocket_headers(**headers))
                assert status == 101, f"{call} refused a good caller: {status}"
            continue
        headers = {**content, "Cookie": cookies, "X-XSRFToken": xsrf}
        status, _, data = server.request(
            call.method, call.path(world.values(call)), auth=None, body=body, headers=headers
        )
        assert status not in (*REFUSED, 405) and status < 500 and not is_routing_404(status, data), (
            f"{call} refused a good caller: {status} {data[:300]!r}"
        )
    changed = world.snapshot()
    assert changed["tasks"] != before["tasks"] and changed["credentials"] != before["credentials"]
    if world.cluster:
        assert changed["prompts"] != before["prompts"]


def forms(secret: bytes) -> dict[str, bytes]:
    """A secret as it could be written down: itself, hex, and base64 (alone, or inside a longer value's base64 at
    any of the three alignments, so without the edges)."""
    found = {"raw": secret, "hex": secret.hex().encode(), "HEX": secret.hex().upper().encode()}
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + secret)
        found[f"base64+{shift}"] = encoded[4 if shift else 0 : -4]
        found[f"urlsafe base64+{shift}"] = base64.urlsafe_b64encode(b"\0" * shift + secret)[4 if shift else 0 : -4]
    return found


def key_needles(key: str) -> dict[str, bytes]:
    """An SSH private key's text, its text as JSON writes it, its base64 body's lines and the bytes they encode."""
    body = [line for line in key.strip().splitlines() if not line.startswith("-----")]
    blob = binascii.a2b_base64("".join(body))
    needles = {"key text": key.strip().encode(), "key as JSON": json.dumps(key)[1:-1].encode()}
    needles |= {f"key line {i}": line.encode() for i, line in enumerate(body) if len(line) >= 40 and i >= 2}
    private = blob[len(blob) // 2 :]  # the private half of the key's bytes (the public key comes first)
    return needles | {"key bytes": private, "key bytes, hex": private.hex().encode()}


def save_notebook(world: World, path: str, cells: list[Execution]) -> Path:
    """The notebook as JupyterLab would save it, outputs and all, through the server's contents API."""
    notebook = nbformat.v4.new_notebook()
    for cell in cells:
        code = nbformat.v4.new_code_cell(cell.code)
        code.outputs = [
            nbformat.v4.output_from_msg({"header": {"msg_type": o.msg_type}, "content": o.content})
            for o in cell.outputs
            if o.msg_type in ("stream", "error", "execute_result", "display_data")
        ]
        notebook.cells.append(code)
    world.server.json("PUT", f"api/contents/{path}", {"type": "notebook", "format": "json", "content": notebook})
    return world.server.root / path


def test_no_secret_is_left_in_any_file_the_log_or_the_notebook(world: World) -> None:
    server, kernel = world.server, world.kernel
    server.json("PUT", "hetflow/api/credentials/scan-token", {"kind": "token", "fields": {"token": SECRET}})
    needles = {f"token, {name}": value for name, value in forms(SECRET.encode()).items()}
    # the cell builds the value from two halves: neither its code nor its payload holds it (as in test_credentials)
    half = len(SECRET) // 2
    cells = [kernel.run(f"left, right = {SECRET[:half]!r}, {SECRET[half:]!r}").check()]
    connected = threading.Event()

    def ended(message: str) -> bool:  # the leaky task's last event: everything it said is in by then
        return '"failed"' in message and '"leaky"' in message and json.loads(message).get("type") == "task"

    with ThreadPoolExecutor(1) as pool:  # the event socket, listening while the task runs
        listening = pool.submit(collect_events, server, 60, connected, ended)
        assert connected.wait(30), "the event socket did not open"
        leaky = kernel.run(
            "%%remote name=leaky cache=false\nfor i in range(3):\n    print('token is', left + right, flush=True)\n"
            "raise RuntimeError('failed with ' + left + right)\n"
        )
        events = listening.result(60)
    cells.append(leaky)
    # a result too big for the database: a file in blobs/ (the task read the secret, which stays out of it)
    bulky = f"%%remote name=bulky cache=false\nbulky = len(left + right) * 'x' * {SMALL_BLOB // 10}\n"
    cells.append(kernel.run(bulky).check())
    assert "token is ********" in leaky.stdout and "failed with ********" in leaky.traceback
    assert any("token is ********" in e for e in events), events
    if world.cluster:  # the engine logs in to the cluster with the SSH key credential
        cells.append(
            kernel.run(
                "%%remote executor=over-ssh name=via-ssh cache=false\nimport getpass\nwho = getpass.getuser()\n"
            ).check()
        )
        assert kernel.value("who") == world.cluster["HETFLOW_SSH_USER"]
        needles |= key_needles(Path(world.cluster["HETFLOW_SSH_KEY"]).read_text())
    notebook = save_notebook(world, "security.ipynb", world.cells + cells)
    assert "token is ********" in notebook.read_text()

    secrets_file = server.store / "credentials.json"
    assert secrets_file.stat().st_mode & 0o777 == 0o600
    # the one file that holds them (mode 0600) shows that the scan finds what it looks for
    assert needles["token, raw"] in secrets_file.read_bytes()
    assert not world.cluster or needles["key as JSON"] in secrets_file.read_bytes()
    scanned: list[Path] = []
    for path in sorted(server.root.rglob("*")):
        if path.is_file() and path != secrets_file:
            data = path.read_bytes()
            found = [name for name, needle in needles.items() if needle in data]
            assert not found, f"{found} in {path}"
            scanned.append(path)
    for event in events:
        assert not [name for name, needle in needles.items() if needle in event.encode()], event
    for where in (server.store / "blobs", server.store / "logs", server.store / "hetflow.db"):
        assert any(p == where or where in p.parents for p in scanned), f"nothing scanned in {where}"
    assert server.root / "server.log" in scanned and notebook in scanned
    remote = 0
    if world.cluster:  # nor on the cluster, where the engine shipped the task
        for name, needle in needles.items():
            if name.startswith("key line") or name == "token, raw":
                hits = ssh(world.cluster, f"grep -rlF -e '{needle.decode()}' ~/.hetflow-security-tests || true")
                assert not hits.strip(), f"{name} on the cluster in {hits}"
                remote += 1
    size = sum(p.stat().st_size for p in scanned)
    print(
        f"\nsecurity: secret scan: {len(scanned)} files ({size / MB:.1f} MB: store, blobs, logs, events, server log, "
        f"notebook), {len(events)} events, {remote} remote greps, {len(needles)} forms of the secrets: none found"
    )


def test_no_probe_was_answered_with_a_500(world: World) -> None:
    """The server's own log, over everything above: not one request ended in an uncaught exception."""
    log = (world.server.root / "server.log").read_text(errors="replace")
    assert not re.findall(r"\] 5\d\d (?:GET|POST|PUT|DELETE|PATCH) .*", log), "a request ended in a 5xx"
    assert "Uncaught exception" not in log
