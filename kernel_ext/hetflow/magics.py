"""`%%remote` runs a cell as a task; `%remote` looks at and steers tasks."""

from __future__ import annotations

import itertools
import sys
from typing import Any

import IPython
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.core.magic import Magics, line_cell_magic, magics_class
from traitlets import Int

from hetflow_server.models import MAX_NAME, State, TaskSpec
from hetflow_server.protocol import Payload, SpecError, StoreError, sha256

from . import capture, display
from .client import EngineClient, get_client
from .futures import Future, Submission, futures_in, resolve
from .options import CellOptions, help_text, parse_line
from .payload import origin, pickled, split_inputs

LINE_COMMANDS = {
    "status": "list recent tasks and say which engine this kernel uses",
    "logs": "TASK: print the task's log",
    "cancel": "TASK: stop the task (queued or running)",
    "result": "TASK: the finished task's outputs, as a dict",
    "rerun": "TASK: run the task again (of a foreach: the failed elements), then what depends on it",
    "graph": "draw this notebook's tasks and their dependencies",
    "executors": "list the configured executors and their health",
    "clean": "EXECUTOR: empty the executor's blob store (but what running tasks read); DAYS, or nothing: forget "
    "the ended tasks older than that (c.Hetflow.keep_days) with their logs and results, but pinned ones",
    "pin": "TASK: keep the task and its results whatever its age (%remote clean and retention pass it by)",
    "unpin": "TASK: let retention forget the task again",
}


def _default_name(outputs: list[str], imports: list[str], count: int) -> str:
    """The first output the cell computes (not a module it imports), else the cell's number."""
    computed = [name for name in outputs if name not in imports]
    return (computed or outputs or [f"cell{count}"])[0][:MAX_NAME]


def _usage() -> str:
    commands = "\n".join(f"  %remote {name:<10} {text}" for name, text in LINE_COMMANDS.items())
    return f"%%remote [key=value ...] runs the cell as a task.\n{help_text()}\n\nLine commands:\n{commands}"


@magics_class
class RemoteMagics(Magics):
    foreach_limit = Int(
        100_000,
        help="Most elements a foreach may have: the expression is iterated no further (an endless generator stops "
        "there with an error). `%config RemoteMagics.foreach_limit = N` to change it.",
    ).tag(config=True)

    shell: InteractiveShell  # IPython registers the magics with its shell

    @line_cell_magic
    def remote(self, line: str, cell: str | None = None) -> Any:
        if cell is None:
            return self._command(line)
        return self._run_cell(line, cell)

    remote.__doc__ = _usage()

    # --------------------------------------------------------------------------- %%remote

    def _run_cell(self, line: str, cell: str) -> Any:
        try:
            options, spec, payload, elements = self._capture(line, cell)
        except SpecError as err:  # an input that cannot be pickled
            raise UsageError(str(err)) from None
        if elements == []:  # foreach over nothing: nothing to run, every output an empty list
            self.shell.user_ns.update({name: [] for name in spec.outputs})
            return None
        client = get_client()
        try:
            tasks, cached, watch = client.submit(spec, payload, elements)
        except SpecError as err:
            raise UsageError(str(err)) from None
        submission = Submission(client, tasks, watch, spec.outputs, elements is not None)
        live = client.mode == "server"
        if options.wait or cached:
            try:
                outputs, value = submission.values(live)
            except display.TaskDetached:  # the task goes on: its outputs become futures
                self.shell.user_ns.update({name: Future(submission, name) for name in spec.outputs})
                raise
            self.shell.user_ns.update(outputs)
            for name in submission.deleted:
                self.shell.user_ns.pop(name, None)
            return value
        namespace = self.shell.user_ns
        for name in spec.outputs:
            namespace[name] = Future(submission, name)
        display.StatusLine(submission.first, live and elements is None).update(counts=None, now=True)
        return None

    def _capture(self, line: str, cell: str) -> tuple[CellOptions, TaskSpec, bytes, list[bytes] | None]:
        """Options, analysis and pickled inputs: every user error is raised here, before any submission."""
        try:
            options = parse_line(line)
            tree = capture.parse_cell(cell, line_offset=1)
        except (SpecError, capture.CellSyntaxError) as err:
            raise UsageError(str(err)) from None
        analysis = capture.analyse(tree, cell)
        namespace = self.shell.user_ns
        if options.inputs is not None:
            missing = [name for name in options.inputs if name not in namespace]
            if missing:
                raise UsageError(f"inputs={','.join(options.inputs)}: {', '.join(missing)} not defined")
        inputs = options.inputs if options.inputs is not None else capture.inputs_from(analysis, namespace)
        outputs = options.outputs if options.outputs is not None else capture.outputs_from(analysis)
        if analysis.stars and options.outputs is None:
            stars = ", ".join(f"from {module} import *" for module in analysis.stars)
            print(
                f"hetflow: the names {stars} binds are not known here, so they stay in the task; name those you "
                "need in outputs=..., or import them in the kernel",
                file=sys.stderr,
            )
        elements = None
        if options.foreach is not None:
            name, expr = options.foreach
            inputs = [i for i in inputs if i != name]
            elements = self._elements(name, expr)
        refs, pickled, origins = split_inputs({name: namespace[name] for name in inputs})
        count = self._prompt_number()
        payload = Payload(
            code=cell,
            source=f"%%remote {line}\n{cell}",
            filename=f"Cell In[{count}]",
            line_offset=1,
            inputs=pickled,
            outputs=outputs,
            outputs_explicit=options.outputs is not None,
            deleted=analysis.deletes,
            display=analysis.display,
        ).pickle()
        spec = TaskSpec(
            code=cell,
            inputs={name: sha256(data) for name, data in pickled.items()},
            outputs=outputs,
            name=options.name or _default_name(outputs, analysis.imports, count),
            executor=options.executor,
            options=options.executor_options,
            retries=options.retries,
            timeout=options.timeout,
            cache=options.cache,
            **origin(self.shell),
            refs=refs,
            origins=origins,
            after=options.after,
            foreach=options.foreach[0] if options.foreach else None,
            bring=options.wait,  # its values go into the namespace at once
        )
        return options, spec, payload, elements

    def _elements(self, name: str, expr: str) -> list[bytes]:
        """The foreach expression, evaluated here (after the futures it reads), each element pickled."""
        try:
            code = compile(expr, "<foreach>", "eval")
        except SyntaxError as err:
            raise UsageError(f"foreach={name}:{expr}: {err.msg}") from None
        resolve([n for n in code.co_names if n in self.shell.user_ns])
        try:
            values = list(itertools.islice(eval(code, self.shell.user_ns), self.foreach_limit + 1))
        except Exception as err:
            hint = (
                f" (quotes in an option are the shell's: to iterate over a string, quote the option whole, e.g. "
                f"foreach=\"{name}:'abc'\")"
                if isinstance(err, NameError)
                else ""
            )
            raise UsageError(
                f"foreach={name}:{expr} could not be iterated: {type(err).__name__}: {err}{hint}"
            ) from None
        if len(values) > self.foreach_limit:
            raise UsageError(
                f"foreach={name}:{expr} has more than {self.foreach_limit:,} elements (RemoteMagics.foreach_limit): "
                "iterate over fewer, or over chunks of them"
            )
        return [pickled(f"element {n} of {name}", value) for n, value in enumerate(values)]

    def _prompt_number(self) -> int:
        """The N of the cell's In[N]: IPython 9 counts the running cell before it runs, IPython 8 after."""
        return self.shell.execution_count - (1 if IPython.version_info[0] >= 9 else 0)

    # --------------------------------------------------------------------------- %remote

    def _command(self, line: str) -> Any:
        words = line.split()
        if not words or words[0] in ("help", "-h", "--help"):
            print(_usage())
            return None
        command, args = words[0], words[1:]
        if command not in LINE_COMMANDS:
            raise UsageError(f"unknown command {command!r}; %remote takes: {', '.join(LINE_COMMANDS)}")
        one = "TASK: name one task by its name or id"
        needs = {"logs": one, "cancel": one, "result": one, "rerun": one, "pin": one, "unpin": one}
        if command in needs and len(args) != 1:
            raise UsageError(f"%remote {command} {needs[command]}")
        if command == "clean" and len(args) > 1:
            raise UsageError("%remote clean EXECUTOR, %remote clean DAYS, or %remote clean")
        if command not in needs and command != "clean" and args:
            raise UsageError(f"%remote {command} takes no arguments (got {' '.join(args)!r})")
        client = get_client()
        try:
            return getattr(self, f"_cmd_{command}")(client, *args)
        except (SpecError, StoreError) as err:
            raise UsageError(str(err)) from None

    def _cmd_status(self, client: EngineClient) -> None:
        print(f"engine: {client.describe()}")
        tasks = client.tasks(limit=50)
        print(display.table(display.task_rows(tasks), display.TASK_HEADER) if tasks else "no tasks yet")

    def _cmd_logs(self, client: EngineClient, ref: str) -> None:
        print(client.logs(ref), end="")

    def _cmd_cancel(self, client: EngineClient, ref: str) -> None:
        task = client.cancel(ref)
        print(f"task {task.name!r} ({task.id}) is {task.state.value}")

    def _cmd_result(self, client: EngineClient, ref: str) -> dict[str, Any]:
        task = client.find(ref)
        if task.state is not State.COMPLETED:
            if task.state.final:
                raise display.RemoteTaskError(task)
            raise UsageError(f"task {task.label!r} is {task.state.value}; ask again when it has completed")
        return display.unpickled(task, client.result(task))["outputs"]

    def _cmd_rerun(self, client: EngineClient, ref: str) -> None:
        tasks = client.rerun(ref)
        ids = [t.id for t in tasks]
        for future in futures_in(self.shell.user_ns).values():
            if any(i in ids for i in future.submission.order):
                future.submission.rewatch(ids)
        names = ", ".join(dict.fromkeys(t.label for t in tasks))
        print(f"re-running {len(tasks)} task(s): {names}")

    def _cmd_graph(self, client: EngineClient) -> Any:
        from IPython.display import SVG

        from .graph import render_svg

        return SVG(render_svg(client.graph()))

    def _cmd_clean(self, client: EngineClient, what: str | None = None) -> None:
        days = None
        if what is not None:
            try:
                days = float(what)
            except ValueError:  # an executor's name
                cleaned = client.clean(what)
                print(f"{what}: {cleaned['removed']} blobs removed ({cleaned['bytes']} bytes)")
                return
        gone = client.forget(days)
        print(f"forgot {gone['tasks']} ended task(s), {gone['blobs']} blob(s), {gone['bytes']:,} bytes")

    def _cmd_pin(self, client: EngineClient, ref: str) -> None:
        task = client.pin(ref, True)
        print(f"task {task.label!r} ({task.id}) is pinned: kept whatever its age")

    def _cmd_unpin(self, client: EngineClient, ref: str) -> None:
        task = client.pin(ref, False)
        print(f"task {task.label!r} ({task.id}) is no longer pinned")

    def _cmd_executors(self, client: EngineClient) -> None:
        rows = [
            [
                name,
                info.pop("kind"),
                "yes" if info.pop("healthy") else "NO",
                " ".join(f"{k}={_detail(k, v)}" for k, v in info.items()),
            ]
            for name, info in client.executors().items()
        ]
        print(display.table(rows, ["NAME", "KIND", "HEALTHY", "DETAILS"]))


def _detail(key: str, value: Any) -> str:
    """A value of `%remote executors`; allocations as `ID@NODES(running/tasks, idle S s)`."""
    if key != "allocations" or not isinstance(value, list):
        return str(value)
    shown = [
        f"{a['id']}@{','.join(a['nodes']) or '?'}({a['running']}/{a['tasks']} tasks, idle {a['idle_for']:g} s)"
        for a in value
    ]
    return ",".join(shown) or "none"
