"""docs/reference.md is generated from the code by scripts/reference.py; these tests keep it fresh and complete."""

from __future__ import annotations

import runpy
from pathlib import Path
from typing import Any

import pytest
from traitlets import Int

from hetflow_server import credentials
from hetflow_server.executors import KINDS, Executor, executor_class
from hetflow_server.models import COMMON_OPTIONS
from hetflow_server.settings import Hetflow

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "reference.py"


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    """The script's functions (scripts/ is not a package on the path)."""
    return runpy.run_path(str(SCRIPT))


@pytest.fixture(scope="module")
def generated(reference: dict[str, Any]) -> str:
    return reference["render"]()


def test_reference_is_fresh(reference: dict[str, Any], generated: str) -> None:
    path: Path = reference["REFERENCE"]
    current = path.read_text(encoding="utf-8") if path.exists() else ""
    assert current == generated, reference["STALE"]


def test_everything_configurable_is_in_it(generated: str) -> None:
    """A new executor kind, option, setting or credential kind cannot be left out silently."""
    for kind in KINDS:
        assert f"### `{kind}`" in generated, f"executor kind {kind} is missing"
        cls = executor_class(kind)
        for name in set(cls.class_traits()) - set(Executor.class_traits()):
            assert f"| `{name}` |" in generated, f"setting {name} of {kind} is missing"
        for name in cls.options:
            assert f"`{name}=" in generated, f"cell option {name} of {kind} is missing"
    for name in COMMON_OPTIONS:
        assert f"| `{name}` |" in generated, f"%%remote option {name} is missing"
    for name in Hetflow.class_traits(config=True):
        assert f"`c.Hetflow.{name}`" in generated, f"c.Hetflow.{name} is missing"
    for kind in credentials.KINDS:
        assert f"| `{kind}` |" in generated, f"credential kind {kind} is missing"


def test_setting_without_help_is_named(reference: dict[str, Any]) -> None:
    class Bare(Executor):
        kind = "bare"
        depth = Int(3)
        width = Int(2, help="documented")

    missing: list[str] = []
    rows = reference["trait_rows"](Bare, ["depth", "width"], missing, str)
    assert [row[0] for row in rows] == ["depth", "width"]
    assert missing == [f"{__name__}.Bare.depth"]


def test_table_cells_escape_pipes(reference: dict[str, Any]) -> None:
    assert reference["table"](["a"], [["x | y\nz"]])[2] == "| x \\| y z |"


def test_check_and_write(
    reference: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--check` fails on a stale file and writes nothing; without it the file is written, then fresh."""
    target = tmp_path / "reference.md"
    target.write_text("edited by hand\n")
    monkeypatch.setitem(reference["main"].__globals__, "REFERENCE", target)
    assert reference["main"](["--check"]) == 1
    assert "docs/reference.md is stale: run python scripts/reference.py" in capsys.readouterr().err
    assert target.read_text() == "edited by hand\n"
    assert reference["main"]([]) == 0
    assert reference["main"](["--check"]) == 0
