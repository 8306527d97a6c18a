"""The workflow DAG as one standalone SVG string, for `%remote graph` in a notebook cell.

A notebook output cannot run the sidebar's React Flow graph, and a picture of the workflow should need neither a new
dependency nor the lab extension: this lays out the engine's `graph()` with the stdlib alone, in the sidebar's
colours and, like the sidebar, top to bottom with lone tasks in a grid beside. The elements of a foreach are drawn as
one node with counts per state, so that a thousand elements stay readable. Names, errors and ids come from users:
every piece of text is escaped.
"""

from __future__ import annotations

import html
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

# The sidebar colours a task by state with JupyterLab theme variables (labextension/src/sidebar.css,
# `.hetflow-state-*`, used by components/Graph.tsx); these are the variables' values in JupyterLab's light theme.
STATE_COLOURS: dict[str, str] = {
    "pending": "#9e9e9e",  # --jp-ui-font-color3: rgba(0, 0, 0, 0.38), on white
    "queued": "#64b5f6",  # --jp-brand-color2: --md-blue-300
    "running": "#1976d2",  # --jp-brand-color1: --md-blue-700
    "completed": "#388e3c",  # --jp-success-color1: --md-green-700
    "failed": "#d32f2f",  # --jp-error-color1: --md-red-700
    "cancelled": "#f57c00",  # --jp-warn-color1: --md-orange-700
}
SEVERITY = ("failed", "cancelled", "running", "queued", "pending", "completed")  # worst first: a foreach's colour
SYMBOLS = {"completed": "✓", "failed": "✗", "cancelled": "⊘", "running": "►", "queued": "◔", "pending": "○"}
BACKGROUND = "#ffffff"  # --jp-layout-color0: the SVG brings its own, so that it reads the same in a dark theme
TEXT_COLOUR = "#000000"  # --jp-ui-font-color0
EDGE_COLOUR = "#9e9e9e"

NODE_WIDTH, NODE_HEIGHT = 184, 44
GAP_X, GAP_Y = 16, 40
MARGIN = 12
GRID_COLUMNS = 6  # lone tasks, as in the sidebar's layout.ts
NAME_CHARS, STATE_CHARS, ERROR_CHARS = 24, 30, 200
SHOWN_ERRORS = 3  # of a foreach's failed elements, in its tooltip
LEGEND_HEIGHT = 16
CHAR_WIDTH = 7  # an estimate, for the legend's spacing

_ARROW = (  # the same in every graph, so that several graphs on one page may share its id
    '<defs><marker id="hetflow-arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
    f'orient="auto"><path d="M0 0L10 5L0 10z" fill="{EDGE_COLOUR}"/></marker></defs>'
)
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")  # ANSI colours in a traceback, say


@dataclass
class _Node:
    """One drawn box: a task, or all the elements of one foreach."""

    key: str
    group: str | None
    tasks: list[dict[str, Any]]


def render_svg(graph: dict[str, Any]) -> str:
    """`{"nodes": [task_json, ...], "edges": [{"source": id, "target": id}, ...]}` as a standalone SVG."""
    nodes, edges = _collapse(graph)
    if not nodes:
        return _empty()
    positions = _layout([n.key for n in nodes], edges)
    content_width = max(x for x, _ in positions.values()) + NODE_WIDTH
    legend_top = max(y for _, y in positions.values()) + NODE_HEIGHT + GAP_Y // 2
    legend, legend_width = _legend(Counter(_state(t) for n in nodes for t in n.tasks), legend_top)
    width = max(content_width, legend_width) + 2 * MARGIN
    height = legend_top + LEGEND_HEIGHT + 2 * MARGIN
    count = sum(len(n.tasks) for n in nodes)
    return "".join(
        [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
            f'font-family="sans-serif" role="img" aria-label="workflow graph of {count} tasks">',
            f'<rect width="100%" height="100%" fill="{BACKGROUND}"/>',
            _ARROW,
            f'<g transform="translate({MARGIN} {MARGIN})">',
            *(_edge(positions[source], positions[target]) for source, target in edges),
            *(_node(node, *positions[node.key]) for node in nodes),
            legend,
            "</g></svg>",
        ]
    )


# ---------------------------------------------------------------------------------------------- the graph


def _collapse(graph: dict[str, Any]) -> tuple[list[_Node], list[tuple[str, str]]]:
    """Nodes in input order, one per foreach; edges between them, once each, without the ones inside a foreach."""
    nodes: dict[str, _Node] = {}
    key_of: dict[Any, str] = {}
    for i, task in enumerate(graph.get("nodes") or []):
        group = _first(task, "group_id", "group")
        task_id = task.get("id")
        key = f"group:{group}" if group is not None else f"task:{task_id}" if task_id is not None else f"index:{i}"
        nodes.setdefault(key, _Node(key, group, [])).tasks.append(task)
        if task_id is not None:
            key_of[task_id] = key
    edges: dict[tuple[str, str], None] = {}
    for edge in graph.get("edges") or []:
        source, target = key_of.get(edge.get("source")), key_of.get(edge.get("target"))
        if source is not None and target is not None and source != target:
            edges[source, target] = None
    return list(nodes.values()), list(edges)


def _first(task: dict[str, Any], *keys: str) -> Any:
    """The first of these keys that is set: the engine says `group_id`/`element`, other producers `group`/`index`."""
    return next((task[k] for k in keys if task.get(k) is not None), None)


def _state(task: dict[str, Any]) -> str:
    return str(task.get("state") or "pending")


def _rank(state: str) -> int:
    return SEVERITY.index(state) if state in SEVERITY else SEVERITY.index("pending")


def _colour(state: str) -> str:
    return STATE_COLOURS.get(state, STATE_COLOURS["pending"])


# ---------------------------------------------------------------------------------------------- layout


def _layout(keys: list[str], edges: list[tuple[str, str]]) -> dict[str, tuple[int, int]]:
    """Top left corners: linked nodes in layers, top to bottom; lone nodes in a grid to their right."""
    linked = {k for edge in edges for k in edge}
    layers = _layers([k for k in keys if k in linked], edges)
    widest = max((len(row) for row in layers), default=0)
    positions: dict[str, tuple[int, int]] = {}
    for depth, row in enumerate(layers):
        offset = (widest - len(row)) * (NODE_WIDTH + GAP_X) // 2
        for i, key in enumerate(row):
            positions[key] = (offset + i * (NODE_WIDTH + GAP_X), depth * (NODE_HEIGHT + GAP_Y))
    left = widest * (NODE_WIDTH + GAP_X) + 2 * GAP_X if layers else 0
    for i, key in enumerate(k for k in keys if k not in linked):
        line, column = divmod(i, GRID_COLUMNS)
        positions[key] = (left + column * (NODE_WIDTH + GAP_X), line * (NODE_HEIGHT + GAP_Y))
    return positions


def _layers(keys: list[str], edges: list[tuple[str, str]]) -> list[list[str]]:
    """Longest path from the sources, ignoring a cycle's back edges; each layer ordered by its parents' places."""
    children: dict[str, list[str]] = {k: [] for k in keys}
    for source, target in edges:
        children[source].append(target)
    order = _topological(keys, children)
    place = {k: i for i, k in enumerate(order)}
    parents: dict[str, list[str]] = {k: [] for k in keys}
    depth = dict.fromkeys(keys, 0)
    for key in order:
        for child in children[key]:
            if place[child] > place[key]:  # not a back edge
                parents[child].append(key)
                depth[child] = max(depth[child], depth[key] + 1)
    layers: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for key in keys:
        layers[depth[key]].append(key)
    _order(layers, parents)
    return layers


def _topological(keys: list[str], children: dict[str, list[str]]) -> list[str]:
    """Reverse post-order of a depth-first search (iterative: a chain may be deep): every edge points forward in it,
    but for the back edges that close a cycle."""
    seen: set[str] = set()
    post: list[str] = []
    for root in keys:
        if root in seen:
            continue
        seen.add(root)
        stack = [(root, iter(children[root]))]
        while stack:
            key, rest = stack[-1]
            child = next((c for c in rest if c not in seen), None)
            if child is None:
                stack.pop()
                post.append(key)
            else:
                seen.add(child)
                stack.append((child, iter(children[child])))
    post.reverse()
    return post


def _order(layers: list[list[str]], parents: dict[str, list[str]]) -> None:
    """One downward barycenter pass: a node goes under the mean place of its parents, which uncrosses most edges."""
    place: dict[str, int] = {}
    for row in layers:
        here = {k: i for i, k in enumerate(row)}
        row.sort(key=lambda k: sum(place[p] for p in parents[k]) / len(parents[k]) if parents[k] else here[k])
        place.update((k, i) for i, k in enumerate(row))


# ---------------------------------------------------------------------------------------------- drawing


def _text(value: Any, limit: int | None = None) -> str:
    """Any value as escaped XML text: characters XML forbids dropped, cut to `limit` characters with an ellipsis."""
    text = _NOT_XML.sub("", str(value))
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    return html.escape(text, quote=True)


def _edge(source: tuple[int, int], target: tuple[int, int]) -> str:
    """From the bottom of the source to the top of the target, as a curve; a cycle's back edge loops round."""
    x1, y1 = source[0] + NODE_WIDTH // 2, source[1] + NODE_HEIGHT
    x2, y2 = target[0] + NODE_WIDTH // 2, target[1]
    bend = (y2 - y1) // 2 if y2 > y1 else GAP_Y
    return (
        f'<path class="hetflow-edge" d="M{x1} {y1}C{x1} {y1 + bend} {x2} {y2 - bend} {x2} {y2}" fill="none" '
        f'stroke="{EDGE_COLOUR}" stroke-width="1.5" marker-end="url(#hetflow-arrow)"/>'
    )


def _node(node: _Node, x: int, y: int) -> str:
    states = Counter(_state(t) for t in node.tasks)
    state = min(states, key=_rank)
    colour = _colour(state)
    if node.group is None:
        task = node.tasks[0]
        name, detail, tooltip = _text(task.get("name", ""), NAME_CHARS), _task_detail(task), _task_tooltip(task)
        ident = f'data-task="{_text(task.get("id", ""))}"'
    else:
        name, detail, tooltip = _group_name(node), _counts(states), _group_tooltip(node, states)
        ident = f'data-group="{_text(node.group)}"'
    return (
        f'<g class="hetflow-node" {ident} data-state="{_text(state)}"><title>{tooltip}</title>'
        f'<rect x="{x}" y="{y}" width="{NODE_WIDTH}" height="{NODE_HEIGHT}" rx="6" fill="{BACKGROUND}" '
        f'stroke="{colour}" stroke-width="2"/>'
        f'<text x="{x + 8}" y="{y + 18}" font-size="12" font-weight="600" fill="{TEXT_COLOUR}">{name}</text>'
        f'<text x="{x + 8}" y="{y + 34}" font-size="10" fill="{colour}">{detail}</text></g>'
    )


def _task_detail(task: dict[str, Any]) -> str:
    executor = task.get("executor")
    return _text(f"{_state(task)} · {executor}" if executor else _state(task), STATE_CHARS)


def _task_tooltip(task: dict[str, Any]) -> str:
    lines = [
        _text(task.get("name", "")),
        f"id: {_text(task.get('id', '?'))}",
        f"state: {_text(_state(task))}",
        f"executor: {_text(task.get('executor', '?'))}",
        f"attempts: {_text(task.get('attempts', 0))}",
    ]
    error = _error(task)
    if error:
        lines.append(f"error: {error}")
    return "\n".join(lines)


def _error(task: dict[str, Any]) -> str:
    error = task.get("error")
    if not isinstance(error, dict):
        return ""
    return _text(f"{error.get('type', 'Error')}: {error.get('message', '')}", ERROR_CHARS)


def _element(task: dict[str, Any]) -> int | None:
    """Its place in its foreach."""
    element = _first(task, "element", "index")
    return element if isinstance(element, int) else None


def _elements(node: _Node) -> list[int]:
    return sorted(i for i in map(_element, node.tasks) if i is not None)


def _group_name(node: _Node) -> str:
    """`name[0..99]`: the name cut so that the range always shows."""
    elements = _elements(node) or [0, len(node.tasks) - 1]
    low, high = elements[0], elements[-1]
    suffix = f"[{low}]" if low == high else f"[{low}..{high}]"
    return _text(node.tasks[0].get("name", ""), max(NAME_CHARS - len(suffix), 2)) + suffix


def _counts(states: Counter[str]) -> str:
    """`97 ✓ 3 ✗`: best first."""
    ordered = sorted(states, key=_rank, reverse=True)
    return _text(" ".join(f"{states[s]} {SYMBOLS.get(s, s)}" for s in ordered))


def _group_tooltip(node: _Node, states: Counter[str]) -> str:
    executors = sorted({str(t.get("executor")) for t in node.tasks if t.get("executor")})
    failed = sorted((t for t in node.tasks if _error(t)), key=lambda t: (_element(t) is None, _element(t) or 0))
    lines = [
        _group_name(node),
        f"foreach: {_text(node.group)}",
        f"elements: {len(node.tasks)}, " + ", ".join(f"{n} {_text(s)}" for s, n in states.most_common()),
        f"executor: {_text(', '.join(executors) or '?')}",
        f"attempts: {sum(t.get('attempts') or 0 for t in node.tasks)} in all",
    ]
    for task in failed[:SHOWN_ERRORS]:
        lines.append(f"[{_element(task)}] error: {_error(task)}")
    if len(failed) > SHOWN_ERRORS:
        lines.append(f"and {len(failed) - SHOWN_ERRORS} more errors")
    return "\n".join(lines)


def _legend(states: Counter[str], top: int) -> tuple[str, int]:
    """A swatch and `✓ completed 97` per state present, in lifecycle order; and the row's width."""
    ordered = sorted(states, key=lambda s: list(STATE_COLOURS).index(s) if s in STATE_COLOURS else len(STATE_COLOURS))
    parts, x = [], 0
    for state in ordered:
        label = f"{SYMBOLS.get(state, '')} {state} {states[state]}".strip()
        parts.append(
            f'<g class="hetflow-legend" data-state="{_text(state)}">'
            f'<rect x="{x}" y="{top + 2}" width="10" height="10" rx="2" fill="{_colour(state)}"/>'
            f'<text x="{x + 14}" y="{top + 11}" font-size="10" fill="{TEXT_COLOUR}">{_text(label)}</text></g>'
        )
        x += 14 + len(label) * CHAR_WIDTH + GAP_X
    return "".join(parts), x


def _empty() -> str:
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" width="160" height="40" viewBox="0 0 160 40" font-family="sans-serif" '
        f'role="img" aria-label="workflow graph: no tasks yet"><rect width="100%" height="100%" fill="{BACKGROUND}"/>'
        f'<text x="80" y="24" font-size="12" text-anchor="middle" fill="{STATE_COLOURS["pending"]}">no tasks yet</text>'
        "</svg>"
    )
