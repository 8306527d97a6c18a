"""`render_svg`: the workflow DAG drawn for a notebook cell."""

from __future__ import annotations

import random
import time
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from hetflow.graph import STATE_COLOURS, render_svg
from hetflow_server.models import State

SVG = "{http://www.w3.org/2000/svg}"


def task(task_id: str, state: str = "completed", **extra: Any) -> dict[str, Any]:
    """The keys of `Task.to_json()` the drawing uses."""
    return {
        "id": task_id,
        "name": task_id,
        "state": state,
        "executor": "local",
        "attempts": 1,
        "created": 0.0,
        "error": None,
        **extra,
    }


def graph(nodes: list[dict[str, Any]], *edges: tuple[str, str]) -> dict[str, Any]:
    return {"nodes": nodes, "edges": [{"source": s, "target": t} for s, t in edges]}


def draw(data: dict[str, Any]) -> ET.Element:
    """The SVG, parsed: this fails unless it is well-formed XML."""
    root = ET.fromstring(render_svg(data))
    assert root.tag == f"{SVG}svg"
    return root


def nodes(root: ET.Element) -> dict[str, ET.Element]:
    """Drawn nodes by task id, or by foreach group id."""
    found = root.iter(f"{SVG}g")
    return {g.get("data-task") or g.get("data-group"): g for g in found if g.get("class") == "hetflow-node"}


def corner(node: ET.Element) -> tuple[float, float]:
    rect = node.find(f"{SVG}rect")
    return float(rect.get("x")), float(rect.get("y"))


def texts(node: ET.Element) -> list[str]:
    return [t.text for t in node.iter(f"{SVG}text")]


def tooltip(node: ET.Element) -> str:
    return node.find(f"{SVG}title").text


def edges(root: ET.Element) -> list[ET.Element]:
    return [p for p in root.iter(f"{SVG}path") if p.get("class") == "hetflow-edge"]


def test_output_is_a_standalone_svg_that_scales() -> None:
    root = draw(graph([task("a"), task("b")], ("a", "b")))
    width, height = float(root.get("width")), float(root.get("height"))
    assert root.get("viewBox") == f"0 0 {root.get('width')} {root.get('height')}"
    for node in nodes(root).values():
        x, y = corner(node)
        rect = node.find(f"{SVG}rect")
        assert 0 <= x <= width - float(rect.get("width"))
        assert 0 <= y <= height - float(rect.get("height"))


def test_chain_is_laid_out_in_dependency_order() -> None:
    # listed backwards, so that the order must come from the edges
    drawn = nodes(draw(graph([task("c"), task("b"), task("a")], ("a", "b"), ("b", "c"))))
    assert corner(drawn["a"])[1] < corner(drawn["b"])[1] < corner(drawn["c"])[1]


def test_a_node_goes_below_its_deepest_parent() -> None:
    drawn = nodes(draw(graph([task("a"), task("b"), task("c")], ("a", "b"), ("b", "c"), ("a", "c"))))
    assert corner(drawn["b"])[1] < corner(drawn["c"])[1]


def test_children_are_placed_under_their_parents_so_edges_do_not_cross() -> None:
    # c is listed first but hangs from b, the parent on the right
    drawn = nodes(draw(graph([task("a"), task("b"), task("c"), task("d")], ("a", "d"), ("b", "c"))))
    assert corner(drawn["a"])[0] < corner(drawn["b"])[0]
    assert corner(drawn["d"])[0] < corner(drawn["c"])[0]


def test_lone_tasks_fill_a_grid_beside_the_dag() -> None:
    lone = [task(f"lone{i}") for i in range(12)]
    drawn = nodes(draw(graph([task("a"), task("b"), *lone], ("a", "b"))))
    rows = {corner(drawn[t["id"]])[1] for t in lone}
    assert len(rows) == 2  # six a row, as in the sidebar
    assert min(corner(drawn[t["id"]])[0] for t in lone) > corner(drawn["a"])[0]


def test_states_are_coloured() -> None:
    states = [s.value for s in State]
    assert set(STATE_COLOURS) == set(states)  # a new state needs a colour
    drawn = nodes(draw(graph([task(s, s) for s in states])))
    for state in states:
        assert drawn[state].find(f"{SVG}rect").get("stroke") == STATE_COLOURS[state]
        assert drawn[state].get("data-state") == state
    assert len(set(STATE_COLOURS.values())) == len(STATE_COLOURS)


def test_node_shows_name_state_and_executor() -> None:
    drawn = nodes(draw(graph([task("fit", "running", executor="slurm")])))
    assert texts(drawn["fit"]) == ["fit", "running · slurm"]


def test_tooltip_has_id_state_executor_attempts_and_error() -> None:
    failed = task("t1", "failed", name="fit", attempts=3, error={"type": "ValueError", "message": "bad input"})
    text = tooltip(nodes(draw(graph([failed])))["t1"])
    for part in ("fit", "id: t1", "state: failed", "executor: local", "attempts: 3", "ValueError: bad input"):
        assert part in text


def test_long_names_are_truncated_with_an_ellipsis() -> None:
    name = "a_rather_long_task_name_that_goes_on"
    drawn = nodes(draw(graph([task("t", name=name)])))
    label = texts(drawn["t"])[0]
    assert len(label) <= 24 and label.endswith("…") and name.startswith(label[:-1])
    assert name in tooltip(drawn["t"])  # the whole name is one hover away


@pytest.mark.parametrize(("group_key", "index_key"), [("group_id", "element"), ("group", "index")])
def test_foreach_elements_become_one_node_with_counts(group_key: str, index_key: str) -> None:
    elements = [
        task(f"e{i}", "failed" if i in (5, 6, 7) else "completed", name="fit", **{group_key: "g1", index_key: i})
        for i in range(100)
    ]
    edges_in = [("load", e["id"]) for e in elements]
    edges_out = [(e["id"], "plot") for e in elements]
    root = draw(graph([task("load"), *elements, task("plot")], *edges_in, *edges_out))
    drawn = nodes(root)
    assert set(drawn) == {"load", "g1", "plot"}
    assert texts(drawn["g1"]) == ["fit[0..99]", "97 ✓ 3 ✗"]
    assert drawn["g1"].find(f"{SVG}rect").get("stroke") == STATE_COLOURS["failed"]
    assert len(edges(root)) == 2  # a hundred edges each way, deduplicated
    assert corner(drawn["load"])[1] < corner(drawn["g1"])[1] < corner(drawn["plot"])[1]


@pytest.mark.parametrize(
    ("states", "worst"),
    [
        (["completed", "failed", "cancelled"], "failed"),
        (["completed", "cancelled", "running"], "cancelled"),
        (["completed", "queued", "running"], "running"),
        (["completed", "pending", "queued"], "queued"),
        (["completed", "pending"], "pending"),
        (["completed", "completed"], "completed"),
    ],
)
def test_foreach_is_coloured_by_its_worst_state(states: list[str], worst: str) -> None:
    elements = [task(f"e{i}", s, group_id="g", element=i) for i, s in enumerate(states)]
    drawn = nodes(draw(graph(elements)))
    assert drawn["g"].get("data-state") == worst
    assert drawn["g"].find(f"{SVG}rect").get("stroke") == STATE_COLOURS[worst]


def test_foreach_tooltip_names_the_failed_elements() -> None:
    elements = [
        task(f"e{i}", "failed", group_id="g", element=i, error={"type": "KeyError", "message": f"k{i}"})
        for i in range(5)
    ]
    text = tooltip(nodes(draw(graph(elements)))["g"])
    assert "[0] error: KeyError: k0" in text and "[2] error: KeyError: k2" in text
    assert "k3" not in text and "and 2 more errors" in text


def test_names_are_escaped() -> None:
    evil = "<script>alert('x')</script>&"
    nasty = task(evil, "failed", name=evil, executor=evil, error={"type": evil, "message": evil})
    group = [task(f"e{i}", name=evil, group_id=f"{evil}g", element=i) for i in range(2)]
    svg = render_svg(graph([nasty, *group], (evil, "e0")))
    assert "<script" not in svg and "&lt;script&gt;" in svg
    drawn = nodes(ET.fromstring(svg))
    assert set(drawn) == {evil, f"{evil}g"}
    assert tooltip(drawn[evil]).splitlines()[0] == evil  # escaped, not mangled
    assert texts(drawn[evil])[0].startswith("<script>")
    assert texts(drawn[f"{evil}g"])[0].endswith("[0..1]")


def test_control_characters_keep_the_svg_well_formed() -> None:
    coloured = {"type": "ValueError", "message": "\x1b[31mred\x1b[0m\x00"}
    drawn = nodes(draw(graph([task("t", "failed", error=coloured)])))
    assert "ValueError: [31mred[0m" in tooltip(drawn["t"])


def test_cycle_does_not_hang() -> None:
    started = time.perf_counter()
    root = draw(graph([task("a"), task("b"), task("c")], ("a", "b"), ("b", "c"), ("c", "a"), ("b", "b")))
    assert time.perf_counter() - started < 1
    assert set(nodes(root)) == {"a", "b", "c"}
    assert len(edges(root)) == 3  # every edge is drawn; a self loop is not


def test_edges_have_arrows_and_are_drawn_once() -> None:
    root = draw(graph([task("a"), task("b")], ("a", "b"), ("a", "b")))
    (edge,) = edges(root)
    assert edge.get("marker-end") == "url(#hetflow-arrow)"
    assert root.find(f".//{SVG}marker[@id='hetflow-arrow']") is not None


def test_edges_to_unknown_tasks_are_left_out() -> None:
    root = draw(graph([task("a")], ("a", "gone"), ("gone", "a")))
    assert edges(root) == []


def test_missing_keys_are_handled() -> None:
    root = draw({"nodes": [{}, {"id": "x"}, {"id": "y", "group_id": "g"}], "edges": [{}, {"source": "x"}]})
    assert len(nodes(root)) == 3


def test_legend_lists_the_states_present() -> None:
    root = draw(graph([task("a", "completed"), task("b", "failed"), task("c", "failed")]))
    legend = [g for g in root.iter(f"{SVG}g") if g.get("class") == "hetflow-legend"]
    assert [g.get("data-state") for g in legend] == ["completed", "failed"]
    assert [texts(g)[0] for g in legend] == ["✓ completed 1", "✗ failed 2"]


@pytest.mark.parametrize("data", [{}, {"nodes": [], "edges": []}])
def test_empty_graph_says_so(data: dict[str, Any]) -> None:
    root = draw(data)
    assert "no tasks yet" in "".join(root.itertext())
    assert root.get("viewBox")


def test_thousand_nodes_render_quickly() -> None:
    rng = random.Random(0)
    states = [s.value for s in State]
    tasks = [task(f"t{i}", rng.choice(states)) for i in range(1000)]
    links = [(f"t{rng.randrange(i)}", f"t{i}") for i in range(1, 1000) for _ in range(2)]
    started = time.perf_counter()
    svg = render_svg(graph(tasks, *links))
    assert time.perf_counter() - started < 1
    assert len(nodes(ET.fromstring(svg))) == 1000
