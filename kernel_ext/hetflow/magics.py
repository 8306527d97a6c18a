"""`%%remote` runs a cell as a task; `%remote` looks at and steers tasks."""

from __future__ import annotations

import os
import pickle
import queue
import sys
from typing import Any

import cloudpickle
import IPython
from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class

from hetflow_server.models import SpecError, State, Task, TaskSpec
from hetflow_server.store import StoreError, sha256

from . import capture, display
from .client import get_client
from .options import help_text, parse_line
from .watch import Watch

LINE_COMMANDS = {
    "status": "list recent tasks and say which engine this kernel uses",
    "logs": "TASK: print the task's log",
    "cancel": "TASK: stop the task (queued or running)",
    "result": "TASK: the finished task's outputs, as a dict",
    "executors": "list the configured executors and their health",
}


def _usage() -> str:
    commands = "\n".join(f"  %remote {name:<10} {text}" for name, text in LINE_COMMANDS.items())
    return f"%%remote [key=value ...] runs the cell as a task.\n{help_text()}\n\nLine commands:\n{commands}"


@magics_class
class RemoteMagics(Magics):
    @line_cell_magic
    def remote(self, line: str, cell: str | None = None) -> Any:
        if cell is None:
            return self._command(line)
        return self._run_cell(line, cell)

    remote.__doc__ = _usage()

    # --------------------------------------------------------------------------- %%remote

    def _run_cell(self, line: str, cell: str) -> Any:
        spec, payload = self._capture(line, cell)
        client = get_client()
        try:
            task, _cached, watch = client.submit(spec, payload)
        except SpecError as err:
            raise UsageError(str(err)) from None
        if watch is None:
            return self._deliver(client.result(task))
        task = self._wait(task, watch, live=client.mode == "server")
        return self._deliver(client.result(task, watch.result))

    def _capture(self, line: str, cell: str) -> tuple[TaskSpec, bytes]:
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
        pickled: dict[str, bytes] = {}
        for name in inputs:
            try:
                pickled[name] = cloudpickle.dumps(namespace[name], protocol=5)
            except Exception as err:
                kind = type(namespace[name]).__name__
                raise UsageError(
                    f"input {name!r} ({kind}) cannot be pickled: {err}. Create it inside the cell, "
                    f"or leave it out with inputs=..."
                ) from None
        count = self._prompt_number()
        payload = pickle.dumps(
            {
                "code": cell,
                "source": f"%%remote {line}\n{cell}",
                "filename": f"Cell In[{count}]",
                "line_offset": 1,
                "inputs": pickled,
                "outputs": outputs,
                "outputs_explicit": options.outputs is not None,
                "deleted": analysis.deletes,
                "display": analysis.display,
                "cloudpickle": cloudpickle.__version__,
            },
            protocol=5,
        )
        spec = TaskSpec(
            code=cell,
            inputs={name: sha256(data) for name, data in pickled.items()},
            outputs=outputs,
            name=options.name or (outputs[0] if outputs else f"cell{count}"),
            executor=options.executor,
            options=options.executor_options,
            retries=options.retries,
            timeout=options.timeout,
            cache=options.cache,
            notebook=os.environ.get("JPY_SESSION_NAME"),
            cell_id=self._cell_id(),
        )
        return spec, payload

    def _prompt_number(self) -> int:
        """The N of the cell's In[N]: IPython 9 counts the running cell before it runs, IPython 8 after."""
        return self.shell.execution_count - (1 if IPython.version_info[0] >= 9 else 0)

    def _cell_id(self) -> str | None:
        kernel = getattr(self.shell, "kernel", None)
        parent = kernel.get_parent() if kernel is not None and hasattr(kernel, "get_parent") else None
        return ((parent or {}).get("metadata") or {}).get("cellId")

    def _wait(self, task: Task, watch: Watch, live: bool = False) -> Task:
        """Stream the task's log into the cell until it ends; an interrupt detaches instead of cancelling."""
        status = display.StatusLine(task, live)
        try:
            while not task.state.final:
                try:
                    event = watch.events.get(timeout=0.25)
                except queue.Empty:
                    status.update()
                    continue
                if event["type"] == "log":
                    stream = sys.stderr if event["stream"] == "stderr" else sys.stdout
                    stream.write(event["text"])
                    stream.flush()
                elif event["type"] == "task":
                    task = Task.from_json(event["data"])
                    status.update(task)
        except KeyboardInterrupt:
            raise display.TaskDetached(task) from None
        if task.state is not State.COMPLETED:
            raise display.RemoteTaskError(task)
        return task

    def _deliver(self, data: bytes) -> Any:
        result = cloudpickle.loads(data)
        namespace = self.shell.user_ns
        namespace.update(result["outputs"])
        for name in result["deleted"]:
            namespace.pop(name, None)
        return result["value"]

    # --------------------------------------------------------------------------- %remote

    def _command(self, line: str) -> Any:
        words = line.split()
        if not words or words[0] in ("help", "-h", "--help"):
            print(_usage())
            return None
        command, args = words[0], words[1:]
        if command not in LINE_COMMANDS:
            raise UsageError(f"unknown command {command!r}; %remote takes: {', '.join(LINE_COMMANDS)}")
        needs_task = command in ("logs", "cancel", "result")
        if needs_task and len(args) != 1:
            raise UsageError(f"%remote {command} TASK: name one task by its name or id")
        client = get_client()
        try:
            return getattr(self, f"_cmd_{command}")(client, *args)
        except (SpecError, StoreError) as err:
            raise UsageError(str(err)) from None

    def _cmd_status(self, client: Any) -> None:
        print(f"engine: {client.describe()}")
        tasks = client.tasks(limit=50)
        print(display.table(display.task_rows(tasks), display.TASK_HEADER) if tasks else "no tasks yet")

    def _cmd_logs(self, client: Any, ref: str) -> None:
        print(client.logs(ref), end="")

    def _cmd_cancel(self, client: Any, ref: str) -> None:
        task = client.cancel(ref)
        print(f"task {task.name!r} ({task.id}) is {task.state.value}")

    def _cmd_result(self, client: Any, ref: str) -> dict[str, Any]:
        task = client.find(ref)
        if task.state is not State.COMPLETED:
            if task.state.final:
                raise display.RemoteTaskError(task)
            raise UsageError(f"task {task.name!r} is {task.state.value}; ask again when it has completed")
        return cloudpickle.loads(client.result(task))["outputs"]

    def _cmd_executors(self, client: Any) -> None:
        rows = [
            [
                name,
                info.pop("kind"),
                "yes" if info.pop("healthy") else "NO",
                " ".join(f"{k}={v}" for k, v in info.items()),
            ]
            for name, info in client.executors().items()
        ]
        print(display.table(rows, ["NAME", "KIND", "HEALTHY", "DETAILS"]))
