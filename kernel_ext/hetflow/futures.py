"""What stands in for a cell's outputs while its task runs: a submission (one task, or every element of a foreach)
and one future per output. `wait=false` cells put futures in the namespace; before each cell, finished futures are
swapped for their values, and a plain cell that reads an unfinished one waits for it first (interruptibly: the
task goes on)."""

from __future__ import annotations

import ast
import collections
import contextlib
import sys
from typing import Any

import cloudpickle

from hetflow_server.models import State, Task
from hetflow_server.protocol import sha256

from . import capture, display
from .client import EngineClient
from .display import STATUS_INTERVAL
from .watch import Watch


class Submission:
    """One `%%remote` cell's tasks, watched through the engine's events; shared by its outputs' futures."""

    def __init__(self, client: EngineClient, tasks: list[Task], watch: Watch | None, outputs: list[str], foreach: bool):
        self.client, self.watch, self.outputs, self.foreach = client, watch, outputs, foreach
        self.order = [t.id for t in tasks]
        self.tasks = {t.id: t for t in tasks}
        self._outcome: tuple[dict[str, Any], Any] | None = None
        self.deleted: list[str] = []  # names the cell deleted (a single task's)

    @property
    def first(self) -> Task:
        return self.tasks[self.order[0]]

    @property
    def label(self) -> str:
        return f"{self.first.name}[{len(self.order)}]" if self.foreach else self.first.name

    def refresh(self) -> None:
        if self.watch is not None:
            self.watch.drain()
            self.tasks.update(self.watch.tasks)

    def done(self) -> bool:
        self.refresh()
        return all(t.state.final for t in self.tasks.values())

    def counts(self) -> dict[str, int]:
        found = collections.Counter(task.state for task in self.tasks.values())
        return {state.value: n for state, n in found.items()}

    def state(self) -> str:
        self.refresh()
        if not self.foreach:
            return self.first.state.value
        return ", ".join(f"{n} {s}" for s, n in sorted(self.counts().items()))

    def at_hand(self) -> bool:
        """Whether the results are here already (they came with the final events)."""
        if self._outcome is not None:
            return True
        return self.watch is not None and all(i in self.watch.results for i in self.order)

    def rewatch(self, task_ids: list[str]) -> None:
        """Some of its tasks run again (a re-run): watch them anew."""
        self.watch = self.client.watch([i for i in self.order if i in task_ids])
        self._outcome = None

    def wait(self, live: bool = False) -> None:
        """Stream the tasks' logs into the cell until they end; an interrupt detaches (the tasks go on)."""
        status = display.StatusLine(self.first, live and not self.foreach)
        watch = self.watch
        try:
            while watch is not None and not (watch.done and watch.events.empty()):
                event = watch.next(STATUS_INTERVAL)
                if event is None:  # a tick: the latest states (not queued, see Watch) are read now
                    self.tasks.update(watch.tasks)
                    status.update(None if self.foreach else self.first, self.counts() if self.foreach else None)
                elif event["type"] == "prompt":
                    display.login_question(self.client, event)
                elif event["type"] == "log":
                    stream = sys.stderr if event["stream"] == "stderr" else sys.stdout
                    task = self.tasks.get(event["task"])
                    prefix = f"[{task.element}] " if self.foreach and task is not None else ""
                    stream.write(prefix + event["text"] if prefix else event["text"])
                    stream.flush()
                else:
                    self.tasks[event["task"]] = task = watch.tasks[event["task"]]
                    if not self.foreach:
                        status.update(task)
                    elif status.due():
                        status.update(counts=self.counts())
        except KeyboardInterrupt:
            raise display.TaskDetached(self.first) from None
        self.refresh()
        if status.shown:  # the last word: the final state
            status.update(self.first, self.counts() if self.foreach else None, now=True)

    def values(self, live: bool = False) -> tuple[dict[str, Any], Any]:
        """(outputs, the cell's value), waiting if need be; a failure raises it with its remote traceback."""
        if self._outcome is None:
            self.wait(live)
            failed = [t for t in (self.tasks[i] for i in self.order) if t.state is not State.COMPLETED]
            if failed and self._rerun_elsewhere(failed):
                return self.values(live)
            if failed:
                raise display.RemoteTaskError(failed[0], len(failed), len(self.order) if self.foreach else None)
            self._outcome = self._group_values() if self.foreach else self._task_values()
        return self._outcome

    def _rerun_elsewhere(self, failed: list[Task]) -> bool:
        """Whether tasks that failed here were re-run meanwhile (from the sidebar, another kernel): then watch them."""
        now = [self.client.find(task.id) for task in failed]
        again = [task.id for task in now if task.state is not State.FAILED and task.state is not State.CANCELLED]
        if again:
            self.tasks.update((task.id, task) for task in now)
            self.rewatch(again)
        return bool(again)

    def _task_values(self) -> tuple[dict[str, Any], Any]:
        task = self.first
        inline = self.watch.results.get(task.id) if self.watch is not None else None
        result = display.unpickled(task, self.client.result(task, inline))
        self.deleted = result["deleted"]
        return result["outputs"], result["value"]

    def _group_values(self) -> tuple[dict[str, Any], Any]:
        pickles: list[tuple[Task, bytes | None]]
        if self.at_hand() and self.watch is not None:  # every result came with its final event: none is fetched
            pickles = [(self.tasks[i], self.client.result(self.tasks[i], self.watch.results[i])) for i in self.order]
        else:
            pickles = self.client.group_results(self.first.id)
        results = [display.unpickled(task, data) for task, data in pickles if data]
        outputs = {name: [r["outputs"].get(name) for r in results] for name in self.outputs}
        values = [r["value"] for r in results]
        return outputs, values if any(v is not None for v in values) else None


ORIGINS: dict[int, dict[str, list[Any]]] = {}  # a value's pickle (by size, then hash) -> the task output it is


class Future:
    """A `wait=false` cell's output until its task ends. `.result()` waits for it; a finished future is replaced
    by its value before the next cell runs."""

    def __init__(self, submission: Submission, output: str):
        self.submission, self.output = submission, output
        self._known = False

    @property
    def ref(self) -> list[Any]:
        """The output as a dependency: its task (a foreach's: every element, in order) and the output's name."""
        submission = self.submission
        return [submission.order if submission.foreach else self.task_id, self.output]

    @property
    def task_id(self) -> str:
        return self.submission.first.id

    def done(self) -> bool:
        return self.submission.done()

    def failed(self) -> bool:
        return self.done() and any(t.state is not State.COMPLETED for t in self.submission.tasks.values())

    def result(self) -> Any:
        value = self.submission.values()[0][self.output]
        if not self._known:  # a later cell that reads the value reads this output: one cache key for the same data
            self._known = True
            with contextlib.suppress(Exception):  # what cannot be pickled is never sent on
                data = cloudpickle.dumps(value, protocol=5)
                ORIGINS.setdefault(len(data), {})[sha256(data)] = self.ref
        return value

    def __reduce__(self) -> Any:
        raise TypeError(
            "a hetflow future cannot travel inside another value (a list, a closure, functools.partial): pass it "
            "to hetflow.submit as an argument of its own, read it in a %%remote cell, or use its .result()"
        )

    def __repr__(self) -> str:
        task = self.submission.first
        return (
            f"<hetflow future {self.output!r}: task {self.submission.label!r} ({task.id}) "
            f"{self.submission.state()} on {task.executor}>"
        )


def futures_in(namespace: dict[str, Any]) -> dict[str, Future]:
    return {name: value for name, value in namespace.items() if isinstance(value, Future)}


def swap_finished(namespace: dict[str, Any]) -> None:
    """Before a cell: every future whose task completed, and whose result came with it, becomes its value. A
    result kept where it was computed (a Dask cluster) comes over only when a cell reads it; a failed future stays,
    to raise when used."""
    for name, future in futures_in(namespace).items():
        if future.done() and not future.failed() and future.submission.at_hand():
            try:
                namespace[name] = future.result()
            except Exception as err:  # keep the future: using it raises the same error where it matters
                print(f"hetflow: {name} stays a future: {err}", file=sys.stderr)


def resolve(names: list[str]) -> None:
    """Inserted at the top of a plain cell that reads futures: wait for them, and bind their values."""
    from IPython import get_ipython

    namespace = get_ipython().user_ns
    for name in names:
        value = namespace.get(name)
        if isinstance(value, Future):
            namespace[name] = value.result()


FUTURE_API = frozenset({"done", "result", "failed", "task_id", "submission", "output", "__repr__"})


def _leading(stmt: ast.stmt, position: int) -> bool:
    """A docstring, or a `from __future__` import: what must stay first in a module."""
    if isinstance(stmt, ast.ImportFrom):
        return stmt.module == "__future__"
    return position == 0 and isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)


def _handed_to_hetflow(node: ast.AST) -> set[int]:
    """The names given as they are to `hetflow.submit(...)`/`hetflow.run(...)`: a future there is a dependency
    of the new task, not a value to wait for here."""
    found = set()
    for call in ast.walk(node):
        if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Attribute):
            continue
        func = call.func
        if func.attr in ("submit", "run") and isinstance(func.value, ast.Name) and func.value.id == "hetflow":
            given = [*call.args, *(k.value for k in call.keywords if k.arg == "after")]
            found |= {id(arg) for arg in given if isinstance(arg, ast.Name)}
    return found


INSPECTING = frozenset({"repr", "type", "isinstance", "id"})  # calls that look at the future, not at its value


def _inspected(node: ast.AST) -> set[int]:
    """The names given as they are to `repr(...)`, `type(...)`, `isinstance(...)`, `id(...)`: they ask about
    the future itself, so they must not wait for its value."""
    return {
        id(arg)
        for call in ast.walk(node)
        if isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id in INSPECTING
        for arg in call.args[:1]
        if isinstance(arg, ast.Name)
    }


class AwaitFutures(ast.NodeTransformer):
    """An IPython AST transformer: a cell that reads unfinished futures first waits for them (a `%%remote` cell
    is a call of the magic here and reads none: its futures become dependencies instead). Using the future's own
    API (`fut.done()`, `fut.result()`, `repr(fut)`, `type(fut)`) does not wait."""

    def __init__(self, namespace: dict[str, Any]):
        self.namespace = namespace

    def visit_Module(self, node: ast.Module) -> ast.Module:
        futures = {name for name, value in self.namespace.items() if isinstance(value, Future)}
        if not futures or not node.body:
            return node
        api = {  # fut.done(), fut.result(): the future's own API does not wait
            id(n.value)
            for n in ast.walk(node)
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.attr in FUTURE_API
        }
        api |= _handed_to_hetflow(node) | _inspected(node)
        reads = set(capture.analyse(node, "").reads)  # read from the namespace, not bound in the cell first
        used = {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and n.id in futures and id(n) not in api}
        pending = sorted(futures & reads & used)
        if pending:
            call = ast.parse(f"__import__('hetflow.futures', fromlist=['resolve']).resolve({pending!r})").body[0]
            at = 0  # after a docstring and `from __future__` imports, which must come first
            while at < len(node.body) - 1 and _leading(node.body[at], at):
                at += 1
            for sub in ast.walk(call):
                ast.copy_location(sub, node.body[at])
            node.body.insert(at, call)
        return node
