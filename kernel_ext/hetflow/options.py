"""`%%remote key=value ...` words -> typed cell options; the executor's own keys are checked by the engine."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from hetflow_server.models import COMMON_OPTIONS
from hetflow_server.protocol import SpecError

EXAMPLE = "%%remote executor=local retries=2 timeout=60"


@dataclass
class CellOptions:
    executor: str | None = None
    name: str | None = None
    retries: int = 0
    timeout: float | None = None
    cache: bool = True
    inputs: list[str] | None = None
    outputs: list[str] | None = None
    wait: bool = True
    after: list[str] = field(default_factory=list)
    foreach: tuple[str, str] | None = None  # (the name each element is bound to, the expression to iterate)
    executor_options: dict[str, str] = field(default_factory=dict)


def parse_line(line: str) -> CellOptions:
    try:
        words = shlex.split(line)
    except ValueError as err:
        raise SpecError(f"cannot read the options ({err}); write them as key=value, e.g. {EXAMPLE}") from None
    options = CellOptions()
    seen: set[str] = set()
    seen_last = ""
    for word in words:
        key, sep, value = word.partition("=")
        if not sep or not key.isidentifier():
            quote = (
                f"; if it belongs to {seen_last!r}, quote that option whole, e.g. foreach='x:[1, 2]'" if seen else ""
            )
            raise SpecError(f"{word!r} is not a key=value option; e.g. {EXAMPLE}{quote}")
        if key in seen:
            raise SpecError(f"option {key!r} is given twice")
        seen.add(key)
        seen_last = key
        if key in COMMON_OPTIONS:
            setattr(options, key, COMMON_OPTIONS[key].read(value))
        else:
            options.executor_options[key] = value
    return options


def help_text() -> str:
    """The options table shown by `%%remote?` and written into docs/."""
    width = max(len(name) for name in COMMON_OPTIONS) + 1
    rows = [f"  {o.name:<{width}} {o.help} (e.g. {o.name}={o.example})" for o in COMMON_OPTIONS.values()]
    return "\n".join(
        [
            "Options (key=value, quoted with shell rules when the value has spaces):",
            *rows,
            "  Any other key goes to the executor (see %remote executors); an unknown key is an error.",
        ]
    )
