"""What the user sees in the cell: the status line, remote errors rendered like local ones, tables."""

from __future__ import annotations

import getpass
import linecache
import re
import sys
import time
from typing import Any

import cloudpickle

from hetflow_server.models import State, Task
from hetflow_server.protocol import SpecError

from .client import EngineClient

STATUS_DELAY = 0.5  # a quick task shows no status line, like a progress bar with a delay
STATUS_INTERVAL = 0.2
STATUS_MIME = "application/vnd.hetflow.task+json"  # rendered live, with a Cancel button, by the lab extension


class RemoteTaskError(Exception):
    """A task's failure, shown with the remote traceback whose line numbers are the cell's own."""

    def __init__(self, task: Task, failed: int = 1, elements: int | None = None):
        error = task.error or {}
        self.task, self.failed, self.elements = task, failed, elements
        self.remote_type = error.get("type", "Error")
        self.remote_message = error.get("message", "")
        self.remote_traceback = error.get("traceback", "")
        super().__init__(f"{self.remote_type}: {self.remote_message}")

    def _render_traceback_(self) -> list[str]:
        task = self.task
        header = (
            f"RemoteTaskError: task {task.label!r} ({task.id}) {task.state.value} on "
            f"{task.executor} after {task.attempts} attempt(s)"
        )
        if self.elements is not None:
            header += (
                f"; {self.failed} of {self.elements} elements did not complete. The others are kept: "
                f"`%remote rerun {task.name}` (or running the cell again) runs only these"
            )
        body = self.remote_traceback.rstrip("\n").splitlines() or [str(self)]
        return [header, *_earlier_cells(body)]


_FRAME = re.compile(r'^(\s*)File "([^"]+)", line (\d+)(.*)$')


def _earlier_cells(lines: list[str]) -> list[str]:
    """A frame in a function from an earlier cell names the file IPython compiled that cell into, which the
    remote side cannot read: name the cell as IPython does (`Cell In[N], line L`) and show its line from here."""
    from IPython import get_ipython

    shell = get_ipython()
    cells = getattr(getattr(shell, "compile", None), "_filename_map", None) or {}
    shown: list[str] = []
    for at, line in enumerate(lines):
        frame = _FRAME.match(line)
        if frame is None or frame.group(2) not in cells:
            shown.append(line)
            continue
        indent, filename, number, rest = frame.groups()
        shown.append(f'{indent}File "Cell In[{cells[filename]}]", line {number}{rest}')
        source = linecache.getline(filename, int(number)).strip()
        following = lines[at + 1] if at + 1 < len(lines) else ""
        if source and following.strip() != source:
            shown.append(f"{indent}    {source}")
    return shown


class ResultUnreadable(Exception):
    """A result that came back whole but cannot be rebuilt in this kernel (a module the task had and the kernel
    lacks, a class changed since): one line that names the task and what to do, not hetflow's unpickling stack."""

    def __init__(self, task: Task, err: Exception):
        super().__init__(
            f"the result of task {task.label!r} ({task.id}) cannot be read in this kernel: {type(err).__name__}: "
            f"{err}. Install what it needs in the kernel's environment, or return plain values (outputs=...)"
        )

    def _render_traceback_(self) -> list[str]:
        return [f"ResultUnreadable: {self}"]


def unpickled(task: Task, data: bytes) -> Any:
    """A task's result, rebuilt here; its hash was checked against the store when it was fetched."""
    try:
        return cloudpickle.loads(data)
    except Exception as err:
        raise ResultUnreadable(task, err) from None


class TaskDetached(KeyboardInterrupt):
    """An interrupt while waiting: the task goes on; the message says how to get or stop it."""

    def __init__(self, task: Task):
        super().__init__(task.name)
        self.task = task

    def _render_traceback_(self) -> list[str]:
        name = self.task.name
        return [
            f"Interrupted: task {name!r} ({self.task.id}) keeps running on {self.task.executor}.",
            f"  %remote result {name}   gets its outputs once it is done",
            f"  %remote cancel {name}   stops it",
        ]


def describe(task: Task, counts: dict[str, int] | None = None) -> str:
    if counts is not None:  # the elements of a foreach
        states = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
        return f"hetflow: {task.name}[{sum(counts.values())}] · {task.executor} · {states}"
    where = ran_on(task)
    parts = [f"hetflow: {task.name}", task.executor, *([where] if where else []), task.state.value]
    elapsed = task.elapsed
    if elapsed is not None:
        parts.append(f"{elapsed:.1f} s")
    if task.attempts > 1:
        parts.append(f"attempt {task.attempts}")
    return " · ".join(parts)


class StatusLine:
    """One output line, updated in place, that appears only when the task is not done within STATUS_DELAY."""

    def __init__(self, task: Task, live: bool = False):
        self.task = task
        self.live = live  # the front end can reach the engine (server mode): offer the live, cancellable line
        self._since = self._shown = time.monotonic()
        self._handle: Any = None

    @property
    def shown(self) -> bool:
        return self._handle is not None

    def due(self) -> bool:
        clock = time.monotonic()
        return clock - self._since >= STATUS_DELAY if self._handle is None else clock - self._shown >= STATUS_INTERVAL

    def update(self, task: Task | None = None, counts: dict[str, int] | None = None, now: bool = False) -> None:
        """Show the latest state: at most every STATUS_INTERVAL (thousands of tasks may end in a second)."""
        if task is not None:
            self.task = task
        if not (now or self.due()):
            return
        from IPython import get_ipython
        from IPython.display import display

        if get_ipython() is None:  # plain Python (a script using hetflow.run): no cell to show it in
            return
        self._shown = time.monotonic()

        text: dict[str, Any] = {"text/plain": describe(self.task, counts)}
        if self.live:
            text[STATUS_MIME] = {k: v for k, v in self.task.to_json().items() if k != "code"}
        if self._handle is None:
            self._handle = display(text, raw=True, display_id=True)
        else:
            self._handle.update(text, raw=True)


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=False)).rstrip() for r in [header, *rows]
    )


def ran_on(task: Task) -> str:
    """Where the task runs or ran: the job (a pack's element, and its node), or the process."""
    handle = task.handle or {}
    if handle.get("element"):
        return f"job {handle['element']}" + (f" on {handle['node']}" if handle.get("node") else "")
    if handle.get("job_id"):
        return f"job {handle['job_id']}"
    return f"pid {handle['pid']}" if handle.get("pid") else ""


def task_rows(tasks: list[Task]) -> list[list[str]]:
    return [
        [
            t.id,
            t.label,
            t.executor,
            t.state.value,
            str(t.attempts),
            "" if t.elapsed is None else f"{t.elapsed:.2f}s",
            "" if t.state is not State.FAILED or not t.error else t.error.get("type", ""),
            ran_on(t),
        ]
        for t in tasks
    ]


TASK_HEADER = ["ID", "NAME", "EXECUTOR", "STATE", "TRIES", "ELAPSED", "ERROR", "RAN ON"]


def login_question(client: EngineClient, event: dict[str, Any]) -> None:
    """A remote system asks a question at login (an MFA one-time code) while this cell waits. A JupyterLab with
    hetflow's extension shows it as a dialog; with none following the engine, the cell asks it (hidden input)."""
    if event["state"] != "open":
        return
    prompt = event["prompt"]
    where = f"{prompt['host']} (executor {prompt['executor']})"
    asked = "; ".join(f["text"].strip() for f in prompt["fields"])
    if event["browsers"]:
        print(f"hetflow: {where} asks at login: {asked} — answer it in hetflow's dialog in JupyterLab", file=sys.stderr)
        return
    from IPython.core.error import StdinNotImplementedError

    try:
        answers = [
            (input if field["echo"] else getpass.getpass)(f"hetflow: {where} asks: {field['text']}")
            for field in prompt["fields"]
        ]
    except (StdinNotImplementedError, EOFError):
        print(
            f"hetflow: {where} asks at login: {asked}, and this front end cannot take input: answer it in the "
            f'hetflow dialog in JupyterLab, or POST {{"answers": [...]}} to hetflow/api/prompts/{prompt["id"]}',
            file=sys.stderr,
        )
        return
    try:
        client.answer(prompt["id"], answers)
    except SpecError as err:  # answered elsewhere meanwhile, or it timed out
        print(f"hetflow: {err}", file=sys.stderr)
