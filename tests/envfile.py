"""What the service scripts leave for the tests (scripts/services.sh, scripts/hub.sh write an env file each), and what
a test does when its service is missing: skip on a developer's machine, fail in CI (HETFLOW_REQUIRE_SERVICES=1)."""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import pytest


def read_env(path: Path) -> dict[str, str]:
    """`export KEY=VALUE` lines (values shell-quoted); nothing when the file does not exist."""
    found: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            line = line.strip().removeprefix("export ")
            if "=" in line and not line.startswith("#"):
                key, _, value = line.partition("=")
                found[key] = shlex.split(value)[0] if value else ""
    return found


def running(env_file: Path, how_to_start: str, problem_of: Callable[[dict[str, str]], str | None]) -> dict[str, str]:
    """The service's settings from its env file, once `problem_of` them finds nothing wrong (it answers); else
    `missing` says what is wrong and how to start it."""
    found = read_env(env_file)
    problem = problem_of(found) if found else f"no {env_file}: {how_to_start}"
    if problem:
        missing(problem)
    return found


def missing(problem: str) -> NoReturn:
    if os.environ.get("HETFLOW_REQUIRE_SERVICES") == "1":
        pytest.fail(f"HETFLOW_REQUIRE_SERVICES=1 but {problem}")
    pytest.skip(problem)
