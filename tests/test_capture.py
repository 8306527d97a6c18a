"""The cell analysis of `hetflow.capture`: which names a cell reads (inputs) and binds (outputs)."""

import math
import textwrap

import pytest

from hetflow import capture


def analyse(code: str) -> capture.Analysis:
    code = textwrap.dedent(code)
    return capture.analyse(capture.parse_cell(code), code)


def inputs(code: str, namespace: dict[str, object]) -> list[str]:
    return capture.inputs_from(analyse(code), namespace)


def outputs(code: str) -> list[str]:
    return capture.outputs_from(analyse(code))


# ---------------------------------------------------------------------------------------------- inputs


def test_name_read_from_namespace_is_an_input():
    assert inputs("y = x * 2", {"x": 1, "z": 2}) == ["x"]


def test_name_absent_from_namespace_is_not_an_input():
    assert inputs("y = x * 2", {}) == []


def test_builtin_is_not_an_input():
    assert inputs("n = len(data)", {"data": [], "len": len}) == ["data"]


def test_builtin_name_rebound_in_namespace_is_an_input():
    assert sorted(inputs("n = len(data)", {"data": [], "len": 3})) == ["data", "len"]


def test_module_in_namespace_is_an_input():
    assert inputs("r = math.sqrt(2)", {"math": math}) == ["math"]


def test_name_bound_before_read_is_not_an_input():
    assert inputs("x = 1\ny = x + 1", {"x": 5}) == []


def test_name_bound_conditionally_before_read_is_still_an_input():
    assert inputs("if flag:\n    x = 1\ny = x", {"x": 5, "flag": True}) == ["flag", "x"]


@pytest.mark.parametrize("code", ["x = x + 1", "x += 1"])
def test_rebinding_a_name_from_itself_reads_it(code):
    assert analyse(code).reads == ["x"]
    assert inputs(code, {"x": 1}) == ["x"]


def test_function_body_global_read_is_a_read():
    assert inputs("def f():\n    return a", {"a": 1}) == ["a"]


def test_function_parameters_and_locals_are_not_reads():
    assert analyse("def f(p):\n    q = p\n    return q").reads == []


def test_function_parameter_named_like_a_later_bound_global_is_not_an_input():
    # the parameter x is local to f; the top-level x is bound before it is read
    assert inputs("def f(x):\n    return x\nx = 2\nx", {"x": 1}) == []


def test_comprehension_variable_named_like_a_later_bound_global_is_not_an_input():
    assert inputs("[v for v in data]\nv = 1\nv", {"v": 1, "data": []}) == ["data"]


def test_for_loop_target_is_not_an_input_but_its_iterable_is():
    found = inputs("for i in items:\n    total += i", {"i": 9, "items": [], "total": 0})
    assert sorted(found) == ["items", "total"]


def test_for_loop_over_its_own_target_name_reads_it():
    assert inputs("for x in x:\n    pass", {"x": []}) == ["x"]


def test_with_target_is_not_an_input():
    # fh is bound by the with statement before its body reads it
    assert inputs("with open(p) as fh:\n    data = fh.read()", {"fh": object(), "p": "f"}) == ["p"]


def test_global_declared_in_an_uncalled_function_is_still_an_input():
    # defining f does not bind g: the print reads the namespace's g
    assert inputs("def f():\n    global g\n    g = 1\nprint(g)", {"g": 5}) == ["g"]


# ---------------------------------------------------------------------------------------------- outputs


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("x = 1", ["x"]),
        ("a, (b, *c) = d", ["a", "b", "c"]),
        ("x += 1", ["x"]),
        ("x: int = 1", ["x"]),
        ("for i, j in pairs:\n    pass", ["i", "j"]),
        ("with ctx() as c, ctx() as (d, e):\n    pass", ["c", "d", "e"]),
        ("import a.b", ["a"]),
        ("import a.b as y", ["y"]),
        ("import x as y", ["y"]),
        ("from m import n, o as p", ["n", "p"]),
        ("def f():\n    pass", ["f"]),
        ("async def f():\n    pass", ["f"]),
        ("class C:\n    pass", ["C"]),
        ("(n := 10)", ["n"]),
        ("ys = [(last := v) for v in data]", ["ys", "last"]),
    ],
)
def test_top_level_binding_is_an_output(code, expected):
    assert outputs(code) == expected


def test_match_case_captures_are_outputs():
    code = """\
    match p:
        case [a, *rest]:
            pass
        case {"k": v, **others}:
            pass
        case P(x=px) as whole:
            pass
        case _:
            pass
    """
    assert sorted(outputs(code)) == ["a", "others", "px", "rest", "v", "whole"]


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("def f():\n    inner = 1", ["f"]),
        ("class C:\n    attr = 1", ["C"]),
        ("f = lambda a: (b := a)", ["f"]),
        ("ys = [y for y in data]", ["ys"]),
        ("ys = {k: w for k, w in data}", ["ys"]),
        ("g = (z for z in data)", ["g"]),
        ("fs = [(lambda: (z := 1)) for _ in data]", ["fs"]),
    ],
)
def test_names_bound_only_inside_a_nested_scope_are_not_outputs(code, expected):
    assert outputs(code) == expected


def test_walrus_in_a_default_argument_binds_in_the_cell():
    assert outputs("def f(a=(b := 1)):\n    pass") == ["f", "b"]


def test_except_as_name_is_not_an_output():
    assert outputs("try:\n    pass\nexcept E as e:\n    x = e") == ["x"]


def test_global_in_a_function_defined_in_the_cell_is_an_output():
    assert outputs("def f():\n    global g\n    g = 1") == ["f", "g"]


def test_del_at_top_level_is_a_delete_not_a_bind():
    result = analyse("x = 1\ny = 2\ndel x")
    assert result.deletes == ["x"]
    assert result.binds == ["y"]


def test_rebinding_after_del_brings_the_output_back():
    result = analyse("del x\nx = 2")
    assert result.deletes == []
    assert result.binds == ["x"]


def test_dunder_names_are_not_outputs():
    assert outputs("__all__ = []\nx = 1") == ["x"]


# ---------------------------------------------------------------------------------------------- display


@pytest.mark.parametrize(
    ("code", "display"),
    [
        ("x", True),
        ("x = 1\nf(x)", True),
        ("x;", False),
        ("f(x);  \n", False),
        ("x = 1", False),
        ("", False),
        ("def f():\n    pass", False),
    ],
)
def test_display_only_when_the_cell_ends_in_an_unsilenced_expression(code, display):
    assert analyse(code).display is display


# ---------------------------------------------------------------------------------------------- syntax errors


@pytest.mark.parametrize(("offset", "line"), [(0, 2), (1, 3), (10, 12)])
def test_syntax_error_names_the_line_shifted_by_the_offset(offset, line):
    with pytest.raises(capture.CellSyntaxError, match=rf"syntax error in the cell, line {line}: "):
        capture.parse_cell("a = 1\nb = = 2\n", "<cell>", line_offset=offset)


def test_cell_syntax_error_is_a_syntax_error():
    assert issubclass(capture.CellSyntaxError, SyntaxError)
