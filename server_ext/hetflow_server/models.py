"""The data model: task, state, task spec and the typed options both the kernel and the engine validate."""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from enum import Enum
from typing import Any

from .protocol import SpecError


class State(str, Enum):
    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in (State.COMPLETED, State.FAILED, State.CANCELLED)


# ---------------------------------------------------------------------------------------------- options

MAX_COUNT = 1_000_000  # beyond any count that means something here; far below what SQLite's integers hold
MIN_SECONDS = 0.01  # a shorter duration is below what any executor can measure or stop
MAX_SECONDS = 366 * 86400.0
MAX_NAME = 200  # a task's name, executor or cell id: what a listing shows on a line (a 10 MB name printed 80 MB)
MAX_PATH = 4096  # a notebook's path: Linux's PATH_MAX

_DURATION = re.compile(r"^(?:(?:(\d+)-)?(\d+):)?(\d+):(\d+(?:\.\d+)?)$")


def parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("true", "yes", "1", "on"):
        return True
    if low in ("false", "no", "0", "off"):
        return False
    raise ValueError("expected true or false")


def parse_seconds(text: str) -> float:
    """Seconds as a number (`90`, `1.5`) or Slurm's clock form (`HH:MM:SS`, `D-HH:MM:SS`, `MM:SS`)."""
    text = text.strip()
    match = _DURATION.match(text)
    if match:
        days, hours, minutes, seconds = match.groups()
        if float(seconds) >= 60 or (hours is not None and int(minutes) >= 60):
            raise ValueError("minutes and seconds of HH:MM:SS must be below 60")
        value = int(days or 0) * 86400 + int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds)
    else:
        try:
            value = float(text)
        except ValueError:
            raise ValueError("expected seconds (e.g. 30, 1.5) or HH:MM:SS") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError("must be a positive number of seconds")
    if not MIN_SECONDS <= value <= MAX_SECONDS:
        raise ValueError(f"must be between {MIN_SECONDS:g} s and {MAX_SECONDS / 86400:g} days")
    return value


def parse_count(text: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise ValueError("expected a whole number") from None
    if value < 0:
        raise ValueError("must be 0 or more")
    if value > MAX_COUNT:
        raise ValueError(f"must be at most {MAX_COUNT:,}")
    return value


def parse_names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    for name in names:
        if not name.isidentifier():
            raise ValueError(f"{name!r} is not a Python name")
    return names


def parse_refs(text: str) -> list[str]:
    refs = [parse_name(n) for n in text.split(",") if n.strip()]
    if not refs:
        raise ValueError("name at least one task")
    return refs


def parse_foreach(text: str) -> tuple[str, str]:
    name, sep, expr = text.partition(":")
    if not sep or not name.strip().isidentifier() or not expr.strip():
        raise ValueError("write NAME:EXPRESSION, the name each element is bound to and what to iterate over")
    return name.strip(), expr.strip()


def parse_name(text: str) -> str:
    text = text.strip()
    if not re.fullmatch(r"[A-Za-z0-9_.\-\[\]]{1,100}", text):
        raise ValueError("use letters, digits, '_', '-', '.' (at most 100)")
    return text


@dataclass(frozen=True)
class Option:
    """One `key=value` option: how to read it and what it means (the help and docs come from here)."""

    name: str
    parse: Callable[[str], Any]
    help: str
    example: str

    def read(self, text: str) -> Any:
        try:
            return self.parse(text)
        except ValueError as err:
            raise SpecError(f"{self.name}={text}: {err} (e.g. {self.name}={self.example})") from None


def option_table(*options: Option) -> dict[str, Option]:
    return {o.name: o for o in options}


# Keys every executor understands; they shape the task rather than the executor's job.
COMMON_OPTIONS = option_table(
    Option("executor", parse_name, "name of a configured executor (default: c.Hetflow.default_executor)", "local"),
    Option(
        "name",
        parse_name,
        "task name used by %remote status/logs/cancel/result (default: the outputs)",
        "fit",
    ),
    Option("retries", parse_count, "run again up to N times after a failure, with exponential backoff", "2"),
    Option("timeout", parse_seconds, "fail the task when it runs longer than this (seconds or HH:MM:SS)", "60"),
    Option("cache", parse_bool, "serve an unchanged cell (code, inputs, options) from the result cache", "false"),
    Option("inputs", parse_names, "names to send, instead of the automatic analysis (comma separated)", "x,y"),
    Option("outputs", parse_names, "names to bring back, instead of the automatic analysis", "result"),
    Option("wait", parse_bool, "false: return at once; the outputs become futures that later cells can use", "false"),
    Option("after", parse_refs, "start after these tasks (names or ids) completed, without their data", "a,b"),
    Option("foreach", parse_foreach, "run the cell once per element, in parallel; outputs become lists", "x:range(10)"),
)


def read_executor_options(kind: str, table: dict[str, Option], raw: dict[str, str]) -> dict[str, Any]:
    """Typed executor options from the raw strings of a cell; an unknown key names the keys that exist."""
    typed: dict[str, Any] = {}
    for key, text in raw.items():
        option = table.get(key)
        if option is None:
            known = sorted(set(COMMON_OPTIONS) | set(table))
            raise SpecError(f"unknown option {key!r} for a {kind} executor; options are: {', '.join(known)}")
        typed[key] = option.read(text)
    return typed


# ---------------------------------------------------------------------------------------------- tasks


def ref_ids(source: str | list[str]) -> list[str]:
    """The upstream task ids of one input's ref: one task, or a foreach's elements."""
    return source if isinstance(source, list) else [source]


@dataclass
class TaskSpec:
    """What a kernel asks for: the analysed cell and its options. The payload carries the values."""

    code: str
    inputs: dict[str, str]  # name -> SHA-256 of the input's pickle
    outputs: list[str]
    name: str
    executor: str | None = None
    options: dict[str, str] = field(default_factory=dict)  # executor options, raw strings
    retries: int = 0
    timeout: float | None = None
    cache: bool = True
    notebook: str | None = None
    cell_id: str | None = None
    # input name -> [upstream task id (or a foreach's element ids, in order), its output]
    refs: dict[str, list[Any]] = field(default_factory=dict)
    # input name -> the finished task output (as in refs) that its value, sent in the payload, is unchanged:
    # keyed like that ref, so the same data has one cache key before and after the kernel got the value
    origins: dict[str, list[Any]] = field(default_factory=dict)
    after: list[str] = field(default_factory=list)  # tasks (names or ids) to wait for without their data
    foreach: str | None = None  # the input each element is bound to; elements come with the payload
    # the kernel waits for the value (hetflow.run, a cell with wait=true): an executor that keeps results where
    # they were computed sends this one back with its outcome instead of on request, a round trip later
    bring: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Task:
    id: str
    name: str
    state: State
    executor: str
    options: dict[str, Any]
    code: str
    inputs: dict[str, str]
    outputs: list[str]
    notebook: str | None = None
    cell_id: str | None = None
    retries: int = 0
    timeout: float | None = None
    deps: list[str] = field(default_factory=list)  # ids of tasks this one waits for
    refs: dict[str, list[Any]] = field(default_factory=dict)  # as TaskSpec.refs
    bound: dict[str, str] = field(default_factory=dict)  # input name -> hash of a value given per task
    group_id: str | None = None  # the foreach this task is one element of
    element: int | None = None  # its element's position in the foreach
    attempts: int = 0
    restarts: int = 0  # times re-run because its process died with the engine
    cache_key: str | None = None
    payload_hash: str | None = None
    result_hash: str | None = None
    error: dict[str, Any] | None = None
    handle: dict[str, Any] | None = None
    created: float = 0.0
    started: float | None = None
    finished: float | None = None
    bring: bool = False  # as TaskSpec.bring
    pinned: bool = False  # kept whatever its age (%remote pin): retention.py never forgets it

    JSON_COLUMNS = ("options", "inputs", "outputs", "deps", "refs", "bound", "error", "handle")

    def to_json(self) -> dict[str, Any]:
        """A shallow copy (no deep copy as `asdict` makes: this runs for every event)."""
        data = {name: getattr(self, name) for name in _TASK_FIELDS}
        data["state"] = self.state.value
        return data

    def to_row(self) -> dict[str, Any]:
        return {name: self.column(name) for name in _TASK_FIELDS}

    def column(self, name: str) -> Any:
        """One field as the store keeps it."""
        if name == "state":
            return self.state.value
        value = getattr(self, name)
        return json.dumps(value) if name in self.JSON_COLUMNS and value is not None else value

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Task:
        return cls(**{**data, "state": State(data["state"])})

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Task:
        data = dict(row)
        for col in cls.JSON_COLUMNS:
            data[col] = None if data[col] is None else json.loads(data[col])
        for col in ("bring", "pinned"):  # SQLite keeps a bool as 0 or 1
            data[col] = bool(data[col])
        return cls.from_json(data)

    @property
    def label(self) -> str:
        """Its name, with the element's index for one element of a foreach."""
        return self.name if self.element is None else f"{self.name}[{self.element}]"

    @property
    def elapsed(self) -> float | None:
        if self.started is None:
            return None
        return (self.finished or time.time()) - self.started


_TASK_FIELDS = tuple(f.name for f in fields(Task))
