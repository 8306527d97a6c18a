"""REST + WebSocket API under {base_url}hetflow/api/ (see docs/openapi.yaml). Thin: each handler calls the engine.

Two ways in: the browser with Jupyter's own authentication (cookie + XSRF, or a Jupyter token), and kernels with
the engine's token from the connection file (`Authorization: Bearer ...`; no cookie, so no XSRF to check).
"""

from __future__ import annotations

import base64
import functools
import hmac
import json
import os
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any

from jupyter_core.utils import ensure_async
from jupyter_server.auth import User
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from tornado import iostream, web, websocket

from .engine import Engine
from .models import MAX_COUNT, MAX_NAME, MAX_PATH, MAX_SECONDS, MIN_SECONDS, State, Task, TaskSpec
from .protocol import TASK_MEDIA_TYPE, AccessError, NotFound, SpecError, StoreError, TransportError

AUTH_RESOURCE = "hetflow"
KERNEL_USER = "hetflow-kernel"


class _Access:
    """Authentication shared by the REST handlers and the event socket."""

    request: Any
    settings: dict[str, Any]
    _jupyter_current_user: Any  # jupyter_server's, set here for a kernel as it would set it for a browser

    @property
    def engine(self) -> Engine:
        return self.settings["hetflow_engine"]

    def kernel_authenticated(self) -> bool:
        scheme, _, token = self.request.headers.get("Authorization", "").partition(" ")
        expected = self.settings.get("hetflow_token", "")
        return scheme.lower() == "bearer" and bool(expected) and hmac.compare_digest(token.strip(), expected)

    async def _prepare_kernel(self) -> bool:
        if not self.kernel_authenticated():
            return False
        if not self.check_host():  # type: ignore[attr-defined]
            raise web.HTTPError(403)
        self.current_user = self._jupyter_current_user = User(username=KERNEL_USER)
        return True

    def check_xsrf_cookie(self) -> None:
        if self.kernel_authenticated():
            return None  # a bearer token cannot be sent by another site's page
        return super().check_xsrf_cookie()  # type: ignore[misc]

    async def authorize(self, action: str) -> None:
        if self.kernel_authenticated():
            return
        user = self.current_user
        if user is None:
            raise web.HTTPError(403, "not authenticated")
        allowed = await ensure_async(self.authorizer.is_authorized(self, user, action, AUTH_RESOURCE))  # type: ignore[attr-defined]
        if not allowed:
            raise web.HTTPError(403, "not authorized")


def api(action: str) -> Callable[[Callable[..., Awaitable[None]]], Callable[..., Awaitable[None]]]:
    """Authorize, then turn the engine's user errors into 400/404 JSON answers."""

    def decorate(method: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
        @functools.wraps(method)
        async def wrapper(self: HetflowHandler, *args: Any) -> None:
            await self.authorize(action)
            try:
                await method(self, *args)
            except NotFound as err:
                self.reply({"message": str(err)}, 404)
            except SpecError as err:
                self.reply({"message": str(err)}, 400)
            except ValueError as err:  # a malformed query argument
                self.reply({"message": str(err)}, 400)
            except (AccessError, TransportError) as err:  # a remote system that refused or did not answer
                self.reply({"message": str(err)}, 502)
            except StoreError as err:
                self.reply({"message": str(err)}, 500)

        setattr(wrapper, "__allow_unauthenticated", False)
        return wrapper

    return decorate


def check_spec(spec: TaskSpec) -> None:
    """A spec from the API has JSON's types; the scheduler relies on these."""

    def strings(value: Any) -> bool:
        return isinstance(value, str)

    def label(value: Any, most: int = MAX_NAME) -> bool:  # what listings show: not empty, not a flood
        return strings(value) and 0 < len(value) <= most

    def refs(value: Any) -> bool:  # name -> [task id, or a foreach's element ids, output]
        return isinstance(value, dict) and all(
            strings(name)
            and isinstance(ref, list)
            and len(ref) == 2
            and strings(ref[1])
            and (strings(ref[0]) or (isinstance(ref[0], list) and bool(ref[0]) and all(map(strings, ref[0]))))
            for name, ref in value.items()
        )

    checks = {
        "code": strings(spec.code),
        "name": label(spec.name),
        "inputs": isinstance(spec.inputs, dict) and all(map(strings, [*spec.inputs, *spec.inputs.values()])),
        "outputs": isinstance(spec.outputs, list) and all(map(strings, spec.outputs)),
        "options": isinstance(spec.options, dict) and all(map(strings, [*spec.options, *spec.options.values()])),
        # the ranges `%%remote` options have (models.py): a retries=2**63 from the API was a 500 from SQLite
        "retries": isinstance(spec.retries, int)
        and not isinstance(spec.retries, bool)
        and 0 <= spec.retries <= MAX_COUNT,
        "timeout": spec.timeout is None
        or (
            isinstance(spec.timeout, (int, float))
            and not isinstance(spec.timeout, bool)
            and MIN_SECONDS <= spec.timeout <= MAX_SECONDS
        ),
        "cache": isinstance(spec.cache, bool),
        "bring": isinstance(spec.bring, bool),
        "executor": spec.executor is None or label(spec.executor),
        "notebook": spec.notebook is None or label(spec.notebook, MAX_PATH),
        "cell_id": spec.cell_id is None or label(spec.cell_id),
        "refs": refs(spec.refs),
        "origins": refs(spec.origins),
        "after": isinstance(spec.after, list) and all(map(strings, spec.after)),
        "foreach": spec.foreach is None or (strings(spec.foreach) and spec.foreach.isidentifier()),
    }
    bad = [name for name, ok in checks.items() if not ok]
    if bad:
        raise SpecError(f"bad task spec: wrong type or value for {', '.join(bad)}")


def check_credential(name: str, kind: Any, fields: Any) -> None:
    """Before the store looks at them: a kind that is not a string was a 500 (a list cannot be looked up), and a
    name of dots only reads as a path (`..`) wherever a name is shown or used."""
    if not name.strip("."):
        raise SpecError("a credential name is not made of dots only")
    if not isinstance(kind, str):
        raise SpecError("kind must be a string: one of the credential kinds")
    if not isinstance(fields, dict):
        raise SpecError("fields must be an object of strings")


QUERY_MAX = 2**40  # an offset or limit in a query: beyond any log or history, within what SQLite and seek() take
LOG_PAGE = 64 * 2**20  # the most one logs request reads: read(limit) allocates `limit` bytes before reading
BODY_MAX = 2**20  # any request body but a submission's: credentials, answers (a 10 MB one was read and kept)


def _count(text: str, name: str, most: int = QUERY_MAX) -> int:
    """A count from a query argument; out of range is a 400 (a huge one was a 500 from SQLite, seek or read)."""
    value = int(text)
    if not 0 <= value <= most:
        raise SpecError(f"{name} must be between 0 and {most}")
    return value


class HetflowHandler(_Access, APIHandler):
    auth_resource = AUTH_RESOURCE
    max_body: int | None = BODY_MAX  # None: the route takes bodies of any size

    async def prepare(self) -> None:  # type: ignore[override]
        if not await self._prepare_kernel():
            await super().prepare()
        self.check_body_size()

    def check_body_size(self) -> None:
        """A body larger than the route takes is a 413 (after authentication), before anything reads it."""
        if self.max_body is not None and len(self.request.body or b"") > self.max_body:
            raise web.HTTPError(413, f"the request body is larger than {self.max_body} bytes")

    def reply(self, data: Any, status: int = 200) -> None:
        self.reply_json(json.dumps(data), status)

    def reply_json(self, text: str, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(text)

    def json_body(self) -> dict[str, Any]:
        try:
            data = json.loads(self.request.body or b"{}")
        except json.JSONDecodeError as err:
            raise SpecError(f"the request body is not JSON: {err}") from None
        if not isinstance(data, dict):
            raise SpecError("the request body must be a JSON object")
        return data


class EngineHandler(HetflowHandler):
    @api("read")
    async def get(self) -> None:
        self.reply(
            {"mode": "server", "store": str(self.engine.settings.store_path), "executors": list(self.engine.executors)}
        )


class TasksHandler(HetflowHandler):
    max_body = None  # a submission carries the cell's inputs

    @api("read")
    async def get(self) -> None:
        """Newest first, a page at a time: `next` (the last task's id, or null at the end) is the `before` of the
        next page."""
        states = [State(s) for s in self.get_argument("state", "").split(",") if s] or None
        notebook, before = self.get_argument("notebook", None), self.get_argument("before", None)
        self.reply_json(await self.engine.tasks_json(notebook, states, _page(self), before))

    @api("write")
    async def post(self) -> None:
        """A submission: one line of JSON (the task spec, with `element_sizes` for a foreach), then the
        payload's bytes, then each element's."""
        if self.request.headers.get("Content-Type", "") != TASK_MEDIA_TYPE:
            raise SpecError(f"submit a task as {TASK_MEDIA_TYPE}: a JSON line, then the payload")
        head, _, body = self.request.body.partition(b"\n")
        try:
            fields = json.loads(head)
            sizes = fields.pop("element_sizes", None) if isinstance(fields, dict) else None
            spec = TaskSpec(**fields)
        except (TypeError, json.JSONDecodeError) as err:
            raise SpecError(f"bad task spec: {err}") from None
        check_spec(spec)
        if (spec.foreach is None) != (sizes is None):
            raise SpecError("bad task spec: foreach and element_sizes come together")
        payload, elements = _split(body, sizes)
        spec.notebook = self._relative(spec.notebook)
        tasks, cached = await self.engine.submit(spec, payload, elements)
        reply: dict[str, Any] = {"task": tasks[0].to_json() if tasks else None, "cached": cached}
        if spec.foreach is not None:
            reply["tasks"] = [_brief(t) for t in tasks]
        self.reply(reply, 200 if cached else 201)

    def _relative(self, notebook: str | None) -> str | None:
        """Kernels know their notebook as an absolute path (JPY_SESSION_NAME); the UI wants it from the root."""
        root = self.settings.get("server_root_dir")
        if notebook and root and os.path.isabs(notebook):
            relative = os.path.relpath(notebook, os.path.expanduser(root))
            if not relative.startswith(".."):
                return relative
        return notebook


class TaskHandler(HetflowHandler):
    @api("read")
    async def get(self, ref: str) -> None:
        self.reply({"task": self.engine.find(ref).to_json(), "events": self.engine.history(ref)})


class TaskActionHandler(HetflowHandler):
    ACTIONS = ("cancel", "retry", "rerun", "pin", "unpin")

    @api("write")
    async def post(self, ref: str, action: str) -> None:
        """cancel, pin and unpin answer with the task; retry and rerun with every task that runs again."""
        done = await getattr(self.engine, action)(ref)
        tasks = done if isinstance(done, list) else [done]
        self.reply({"task": tasks[0].to_json() if tasks else None, "tasks": [_brief(t) for t in tasks]})


class TaskLogsHandler(HetflowHandler):
    @api("read")
    async def get(self, ref: str) -> None:
        offset = _count(self.get_argument("offset", "0"), "offset")
        limit = self.get_argument("limit", None)
        data = self.engine.logs(ref, offset, None if limit is None else _count(limit, "limit", LOG_PAGE))
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.set_header("X-Hetflow-Next-Offset", str(offset + len(data)))
        self.finish(data)


class TaskResultHandler(HetflowHandler):
    @api("read")
    async def get(self, ref: str) -> None:
        task, data = await self.engine.result(ref)
        self.set_header("Content-Type", "application/octet-stream")
        self.set_header("X-Hetflow-Result-Hash", task.result_hash or "")
        self.finish(data)


class GraphHandler(HetflowHandler):
    @api("read")
    async def get(self) -> None:
        self.reply_json(await self.engine.graph_json(self.get_argument("notebook", None), _page(self)))


TASK_PAGE = 1000  # the newest tasks a list or graph holds when the request names no limit (10,000: 9 MB, 0.6 s)


def _page(handler: HetflowHandler) -> int | None:
    """How many tasks a list or graph answers with: `limit`, TASK_PAGE without one, every task for limit=0."""
    text = handler.get_argument("limit", None)
    return TASK_PAGE if text is None else _count(text, "limit") or None


class ExecutorsHandler(HetflowHandler):
    @api("read")
    async def get(self) -> None:
        self.reply({"executors": self.engine.describe_executors()})


class ExecutorCheckHandler(HetflowHandler):
    @api("read")
    async def post(self, name: str) -> None:
        self.reply({"name": name, **(await self.engine.executor(name).check())})


class ExecutorCleanHandler(HetflowHandler):
    @api("write")
    async def post(self, name: str) -> None:
        self.reply(await self.engine.clean(name))


class CleanHandler(HetflowHandler):
    @api("write")
    async def post(self) -> None:
        """Retention now (retention.py): {"keep_days": N} forgets ended tasks older than N days instead of
        c.Hetflow.keep_days."""
        days = self.json_body().get("keep_days")
        if days is not None and (isinstance(days, bool) or not isinstance(days, (int, float))):
            raise SpecError("keep_days must be a number of days")
        self.reply(asdict(self.engine.forget(days)))


class AllocationHandler(HetflowHandler):
    @api("write")
    async def delete(self, name: str, allocation: str) -> None:
        executor = self.engine.executor(name)
        await executor.cancel_allocation(allocation)
        self.reply({"name": name, **executor.describe()})


class CredentialsHandler(HetflowHandler):
    @api("read")
    async def get(self) -> None:
        self.reply({"credentials": self.engine.credentials.describe()})


class CredentialHandler(HetflowHandler):
    @api("write")
    async def put(self, name: str) -> None:
        body = self.json_body()
        kind, fields = body.get("kind", ""), body.get("fields", {})
        check_credential(name, kind, fields)
        self.reply({"credential": self.engine.credentials.put(name, kind, fields)})

    @api("write")
    async def delete(self, name: str) -> None:
        self.engine.credentials.delete(name)
        self.set_status(204)
        self.finish()


class PromptsHandler(HetflowHandler):
    @api("read")
    async def get(self) -> None:
        self.reply({"prompts": self.engine.prompts.pending()})


class PromptHandler(HetflowHandler):
    """Answer a login question (the answers go to the waiting connection and nowhere else), or dismiss it."""

    @api("write")
    async def post(self, prompt_id: str) -> None:
        self.engine.prompts.answer(prompt_id, self.json_body().get("answers"))
        self.set_status(204)
        self.finish()

    @api("write")
    async def delete(self, prompt_id: str) -> None:
        self.engine.prompts.dismiss(prompt_id)
        self.set_status(204)
        self.finish()


SEND_BACKLOG = 16 * 2**20  # bytes of events an event socket may have unsent before it is closed


class EventsSocket(_Access, JupyterHandler, websocket.WebSocketHandler):
    """Every state change and log line, as JSON messages, for the sidebar and waiting kernels."""

    auth_resource = AUTH_RESOURCE

    async def prepare(self) -> None:  # type: ignore[override]
        if not await self._prepare_kernel():
            await super().prepare(_redirect_to_login=False)

    async def get(self, *args: Any, **kwargs: Any) -> None:
        await self.authorize("read")
        result = super().get(*args, **kwargs)
        if result is not None:
            await result

    def open(self, *args: Any, **kwargs: Any) -> None:
        self._stream.max_write_buffer_size = SEND_BACKLOG
        # a kernel asks for small results inline (base64), saving a request per task
        self._inline = self.kernel_authenticated() and self.get_argument("results", "") == "inline"
        self._unsubscribe = self.engine.events.subscribe(self._send)
        self._browser = not self.kernel_authenticated()  # a browser: it can show a login question
        self.engine.prompts.browsers += self._browser

    def _send(self, event: dict[str, Any]) -> None:
        if "result" in event:
            result = event["result"]
            event = {k: v for k, v in event.items() if k != "result"}
            if self._inline:
                event["result_b64"] = base64.b64encode(result).decode()
        try:
            self.write_message(json.dumps(event))
        except websocket.WebSocketClosedError:
            self._unsubscribe()
        except iostream.StreamBufferFullError:
            # a reader this far behind is let go (it reconnects and catches up from the store's offsets) instead
            # of the server holding all it has not read
            self.log.warning("hetflow: an event socket fell %d MiB behind and was closed", SEND_BACKLOG >> 20)
            self._unsubscribe()
            self._stream.close()

    @property
    def _stream(self) -> iostream.IOStream:
        assert self.ws_connection is not None and self.ws_connection.stream is not None
        return self.ws_connection.stream

    def on_close(self) -> None:
        unsubscribe = getattr(self, "_unsubscribe", None)
        if unsubscribe:
            unsubscribe()
            self.engine.prompts.browsers -= self._browser


class GroupResultsHandler(HetflowHandler):
    @api("read")
    async def get(self, ref: str) -> None:
        """Every element's result of a foreach in one answer: a JSON line [{id, element, state, result_hash,
        size}...], then the results' bytes one after the other (the kernel checks each hash)."""
        found = await self.engine.group_results(ref)
        index = [{**_brief(task), "size": len(data or b"")} for task, data in found]
        self.set_header("Content-Type", "application/octet-stream")
        self.write(json.dumps(index).encode() + b"\n")
        for _, data in found:
            if data:
                self.write(data)
        self.finish()


def _split(body: bytes, sizes: Any) -> tuple[bytes, list[bytes] | None]:
    """The payload and the elements of a submission body."""
    if sizes is None:
        return body, None
    if not isinstance(sizes, list) or not all(type(n) is int and n >= 0 for n in sizes):
        raise SpecError("bad task spec: element_sizes must be a list of byte counts")
    end = len(body) - sum(sizes)
    if end < 0:
        raise SpecError("bad task spec: element_sizes add up to more than the body")
    elements, offset = [], end
    for size in sizes:
        elements.append(body[offset : offset + size])
        offset += size
    return body[:end], elements


def _brief(task: Task) -> dict[str, Any]:
    """A task without its code: answers about many tasks stay small."""
    return {k: v for k, v in task.to_json().items() if k != "code"}


def route_table() -> list[tuple[str, type]]:
    """Paths relative to the server's base_url; the extension app prefixes them."""
    task = r"hetflow/api/tasks/([A-Za-z0-9_.\-\[\]]+)"
    return [
        (r"hetflow/api/engine", EngineHandler),
        (r"hetflow/api/tasks", TasksHandler),
        (task, TaskHandler),
        (task + f"/({'|'.join(TaskActionHandler.ACTIONS)})", TaskActionHandler),
        (task + r"/logs", TaskLogsHandler),
        (task + r"/result", TaskResultHandler),
        (task + r"/results", GroupResultsHandler),
        (r"hetflow/api/graph", GraphHandler),
        (r"hetflow/api/clean", CleanHandler),
        (r"hetflow/api/executors", ExecutorsHandler),
        (r"hetflow/api/executors/([A-Za-z0-9_.\-]+)/check", ExecutorCheckHandler),
        (r"hetflow/api/executors/([A-Za-z0-9_.\-]+)/clean", ExecutorCleanHandler),
        (r"hetflow/api/executors/([A-Za-z0-9_.\-]+)/allocations/([A-Za-z0-9_.\-]+)", AllocationHandler),
        (r"hetflow/api/credentials", CredentialsHandler),
        (r"hetflow/api/credentials/([A-Za-z0-9_.\-]+)", CredentialHandler),
        (r"hetflow/api/prompts", PromptsHandler),
        (r"hetflow/api/prompts/([0-9a-f]+)", PromptHandler),
        (r"hetflow/api/events", EventsSocket),
    ]
