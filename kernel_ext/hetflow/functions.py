"""Functions as tasks, for code that loops (a variational algorithm's optimizer calling a circuit thousands of
times): `hetflow.submit(fn, *args, executor=..., **options)` returns a future at once, `hetflow.run(...)` waits
for the value. The same engine, cache and executors as `%%remote`; arguments that are futures become
dependencies."""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Callable
from typing import Any

from IPython import get_ipython

from hetflow_server.models import COMMON_OPTIONS, MAX_NAME, TaskSpec
from hetflow_server.protocol import Payload, SpecError, sha256

from .client import get_client
from .futures import Future, Submission
from .payload import origin, split_inputs

# the task options that apply to a function (inputs, outputs, wait and foreach are a cell's)
TASK_OPTIONS = ("name", "retries", "timeout", "cache", "after")
OUTPUT = "result"
PROVIDED = ("device", "shots")  # names an executor hands the code (braket: its device and shots)
FUNCTION_HINT = "Pass something picklable, or create it inside the function."


def _text(key: str, value: Any) -> str:
    """An option's value as the text a cell would give, so that both are read and checked the same way."""
    if key == "after" and not isinstance(value, str):
        values = value if isinstance(value, (list, tuple, set)) else [value]
        return ",".join(v.task_id if isinstance(v, Future) else str(v) for v in values)
    return str(value).lower() if isinstance(value, bool) else str(value)


def _provided(fn: Callable[..., Any], args: tuple[Any, ...]) -> list[str]:
    """The parameters named like what an executor provides that the arguments (and a partial's keywords) leave
    open: a function `def energy(theta, device, shots)` gets the braket executor's device and shots. A plain
    function's answer depends only on its code and the number of arguments: a loop reads its signature once."""
    if isinstance(fn, types.FunctionType):
        return _function_provides(fn.__code__, len(args))
    return _read_provided(fn, args)


@functools.lru_cache(maxsize=256)
def _function_provides(code: types.CodeType, count: int) -> list[str]:
    # the signature of any function with this code (defaults and closure do not change the answer)
    cells = tuple(types.CellType() for _ in code.co_freevars)
    return _read_provided(types.FunctionType(code, {}, closure=cells), (None,) * count)


def _read_provided(fn: Callable[..., Any], args: tuple[Any, ...]) -> list[str]:
    try:
        signature = inspect.signature(fn)
        given = set(signature.bind_partial(*args).arguments) | set(getattr(fn, "keywords", None) or {})
    except (TypeError, ValueError):  # no signature to read (some builtins), or too many arguments: fn says so
        return []
    keywords = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [
        p.name
        for p in signature.parameters.values()
        if p.name in PROVIDED and p.kind in keywords and p.name not in given
    ]


def submit(fn: Callable[..., Any], /, *args: Any, executor: str | None = None, **options: Any) -> Future:
    """Run `fn(*args)` as a task on `executor` (default: the configured default); return a future of its value.

    `options` are task options (name, retries, timeout, cache, after) and the executor's own (e.g. shots=100 on
    braket), checked as in a `%%remote` line: a bad one raises SpecError (a ValueError). Keyword arguments for
    `fn` go through `functools.partial`; parameters named `device` and `shots` left open get the executor's
    (braket). An unchanged call (same function, arguments and options) is served from the cache.
    """
    return _submit(fn, args, executor, options, bring=False)


def _submit(
    fn: Callable[..., Any], args: tuple[Any, ...], executor: str | None, options: dict[str, Any], bring: bool
) -> Future:
    if not callable(fn):
        raise TypeError(f"hetflow.submit takes a function first, not {type(fn).__name__}")
    task: dict[str, Any] = {"executor": executor, "options": {}}
    for key, value in options.items():
        if key in TASK_OPTIONS:
            task[key] = COMMON_OPTIONS[key].read(_text(key, value))
        elif key in COMMON_OPTIONS:
            raise SpecError(f"{key}= is for %%remote cells; hetflow.submit takes {', '.join(TASK_OPTIONS)}")
        else:
            task["options"][key] = _text(key, value)
    names = [f"__arg{n}__" for n in range(len(args))]
    name = getattr(fn, "__name__", "function")
    labels = {"__fn__": f"function {name}", **{key: f"argument {n + 1} of {name}" for n, key in enumerate(names)}}
    refs, pickles, origins = split_inputs({"__fn__": fn, **dict(zip(names, args, strict=True))}, labels, FUNCTION_HINT)
    call = names
    provided = _provided(fn, args)
    if provided:  # only where the executor provides them: elsewhere the function's own defaults hold
        call = [*names, f"**{{k: globals()[k] for k in {tuple(provided)!r} if k in globals()}}"]
    code = f"{OUTPUT} = __fn__({', '.join(call)})\n"
    payload = Payload(
        code=code,
        source=code,
        filename=f"<hetflow.submit {name}>",
        inputs=pickles,
        outputs=[OUTPUT],
        outputs_explicit=True,
    )
    spec = TaskSpec(
        code=code,
        inputs={key: sha256(data) for key, data in pickles.items()},
        outputs=[OUTPUT],
        name=task.pop("name", None) or name.strip("<>")[:MAX_NAME] or "function",
        refs=refs,
        origins=origins,
        bring=bring,
        **origin(get_ipython()),
        **task,
    )
    client = get_client()
    tasks, _, watch = client.submit(spec, payload.pickle())
    return Future(Submission(client, tasks, watch, [OUTPUT], False), OUTPUT)


def run(fn: Callable[..., Any], /, *args: Any, executor: str | None = None, **options: Any) -> Any:
    """`submit(...)` and wait: the value of `fn(*args)`, computed where `executor` runs (a failure raises the
    remote error, with its traceback)."""
    return _submit(fn, args, executor, options, bring=True).result()
