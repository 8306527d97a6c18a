"""docs/openapi.yaml is a valid OpenAPI document and describes exactly the routes and methods the server serves."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from openapi_spec_validator import validate

from hetflow_server.handlers import TaskActionHandler, route_table

SPEC_PATH = Path(__file__).resolve().parent.parent / "docs" / "openapi.yaml"
METHODS = ("get", "post", "put", "delete", "patch", "head", "options")
ACTIONS = re.compile(r"\((\w+(?:\|\w+)+)\)")
# the groups of route_table() in order of appearance, by what precedes them
PARAMS = {
    "tasks/": "task",
    "executors/": "name",
    "allocations/": "allocation",
    "credentials/": "name",
    "prompts/": "prompt",
}


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return yaml.safe_load(SPEC_PATH.read_text())


def _param_name(before: str) -> str:
    for prefix, name in PARAMS.items():
        if before.endswith(prefix):
            return name
    raise AssertionError(f"no spec parameter name for the group after {before!r}; add it to PARAMS")


def code_operations() -> set[tuple[str, str]]:
    """(METHOD, /path) for each method a route's handler defines itself; alternations become separate paths."""
    found = set()
    for pattern, handler in route_table():
        paths = [pattern]
        alternation = ACTIONS.search(pattern)
        if alternation:
            paths = [pattern.replace(alternation.group(0), word) for word in alternation.group(1).split("|")]
        for path in paths:
            while (group := re.search(r"\([^)]*\)[+*]?", path)) is not None:
                name = _param_name(path[: group.start()])
                path = path[: group.start()] + "{" + name + "}" + path[group.end() :]
            found |= {(m.upper(), "/" + path) for m in METHODS if m in vars(handler)}
    return found


def spec_operations(spec: dict[str, Any]) -> set[tuple[str, str]]:
    return {(m.upper(), path) for path, item in spec["paths"].items() for m in METHODS if m in item}


def test_the_spec_is_valid_openapi_3_0(spec: dict[str, Any]) -> None:
    assert spec["openapi"] == "3.0.3"
    validate(spec)


def test_the_drift_check_sees_every_route_and_expands_the_actions() -> None:
    """The control: the conversion of route_table() finds what the drift tests below rely on."""
    found = code_operations()
    assert len({path for _, path in found}) == len(route_table()) + len(TaskActionHandler.ACTIONS) - 1
    assert {
        ("POST", "/hetflow/api/tasks/{task}/cancel"),
        ("POST", "/hetflow/api/tasks/{task}/retry"),
        ("POST", "/hetflow/api/tasks/{task}/rerun"),
        ("PUT", "/hetflow/api/credentials/{name}"),
        ("DELETE", "/hetflow/api/credentials/{name}"),
        ("POST", "/hetflow/api/executors/{name}/check"),
        ("GET", "/hetflow/api/events"),
    } <= found
    assert all("(" not in path and "\\" not in path for _, path in found)


def test_every_route_and_method_of_the_server_is_in_the_spec(spec: dict[str, Any]) -> None:
    missing = code_operations() - spec_operations(spec)
    assert not missing, f"served but not documented in {SPEC_PATH.name}: {sorted(missing)}"


def test_the_spec_documents_no_route_or_method_the_server_lacks(spec: dict[str, Any]) -> None:
    extra = spec_operations(spec) - code_operations()
    assert not extra, f"documented in {SPEC_PATH.name} but not served: {sorted(extra)}"


def test_every_operation_requires_the_engine_token_or_jupyter_auth(spec: dict[str, Any]) -> None:
    assert set(spec["components"]["securitySchemes"]) == {"engineToken", "jupyter"}
    assert spec["security"] == [{"engineToken": []}, {"jupyter": []}]
    for path, item in spec["paths"].items():
        for method in METHODS:
            if method in item:
                # an operation's own `security` replaces the default; none may drop or loosen it
                assert "security" not in item[method], f"{method.upper()} {path} overrides the security"
