"""What a cell reads from the namespace and what it binds there, found with `ast` before anything runs."""

from __future__ import annotations

import ast
import builtins
import symtable
from dataclasses import dataclass, field

_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)
_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


@dataclass
class Analysis:
    """Names in first-use order; `display` is true when the cell ends in an expression to show."""

    reads: list[str] = field(default_factory=list)
    binds: list[str] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)
    display: bool = False


class CellSyntaxError(SyntaxError):
    pass


def _add(names: list[str], name: str) -> None:
    if name not in names:
        names.append(name)


class _Binder(ast.NodeVisitor):
    """Top-level bindings of one statement: it does not enter function or class bodies (their own scopes)."""

    def __init__(self) -> None:
        self.binds: list[str] = []
        self.deletes: list[str] = []

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Store):
            _add(self.binds, node.id)
        elif isinstance(node.ctx, ast.Del):
            _add(self.deletes, node.id)

    def _define(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
        _add(self.binds, node.name)
        for deco in node.decorator_list:
            self.visit(deco)
        # `global x` inside a function defined here binds x in the namespace when it is called
        for sub in ast.walk(node):
            if isinstance(sub, ast.Global):
                for name in sub.names:
                    _add(self.binds, name)

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _define

    def visit_Lambda(self, node: ast.Lambda) -> None:
        pass

    def _comprehension(self, node: ast.AST) -> None:
        # only a walrus inside a comprehension binds in the enclosing scope
        for sub in ast.walk(node):
            if isinstance(sub, ast.NamedExpr) and isinstance(sub.target, ast.Name):
                _add(self.binds, sub.target.id)

    visit_ListComp = visit_SetComp = visit_DictComp = visit_GeneratorExp = _comprehension

    def visit_Import(self, node: ast.Import | ast.ImportFrom) -> None:
        for alias in node.names:
            if alias.name != "*":
                _add(self.binds, alias.asname or alias.name.split(".")[0])

    visit_ImportFrom = visit_Import

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        # `except E as e` unbinds e at the end of the handler: not an output
        if node.type:
            self.visit(node.type)
        for stmt in node.body:
            self.visit(stmt)

    def visit_MatchAs(self, node: ast.MatchAs) -> None:
        if node.name:
            _add(self.binds, node.name)
        self.generic_visit(node)

    def visit_MatchStar(self, node: ast.MatchStar) -> None:
        if node.name:
            _add(self.binds, node.name)

    def visit_MatchMapping(self, node: ast.MatchMapping) -> None:
        if node.rest:
            _add(self.binds, node.rest)
        self.generic_visit(node)


def _global_references(code: str) -> set[str]:
    """Names looked up in the module namespace by any scope of the cell (functions and comprehensions too)."""
    found: set[str] = set()
    tables = [symtable.symtable(code, "<cell>", "exec")]
    while tables:
        table = tables.pop()
        found.update(s.get_name() for s in table.get_symbols() if s.is_global() and s.is_referenced())
        tables.extend(table.get_children())
    return found


def _reads(node: ast.AST, global_refs: set[str]) -> list[str]:
    """The statement's lookups in the namespace (`x += 1` reads x too)."""
    names: list[str] = []
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Load) and sub.id in global_refs:
            _add(names, sub.id)
        elif isinstance(sub, ast.AugAssign) and isinstance(sub.target, ast.Name):
            _add(names, sub.target.id)
    return names


def parse_cell(code: str, filename: str = "<cell>", line_offset: int = 0) -> ast.Module:
    try:
        return ast.parse(code, filename)
    except SyntaxError as err:
        line = (err.lineno or 0) + line_offset
        raise CellSyntaxError(f"syntax error in the cell, line {line}: {err.msg}") from None


def analyse(tree: ast.Module, code: str) -> Analysis:
    """Reads are names used before the cell binds them at top level; binds minus later deletes are outputs."""
    result = Analysis()
    global_refs = _global_references(code)
    bound: set[str] = set()
    for stmt in tree.body:
        binder = _Binder()
        binder.visit(stmt)
        reads = _reads(stmt, global_refs)
        if isinstance(stmt, (ast.For, ast.AsyncFor)):  # the loop variable is bound before the body reads it
            targets = {n.id for n in ast.walk(stmt.target) if isinstance(n, ast.Name)}
            reads = [n for n in reads if n not in targets or n in _reads(stmt.iter, global_refs)]
        for name in reads:
            if name not in bound:
                _add(result.reads, name)
        for name in binder.binds:
            if not _conditional(stmt):
                bound.add(name)
            _add(result.binds, name)
            if name in result.deletes:
                result.deletes.remove(name)
        for name in binder.deletes:
            _add(result.deletes, name)
            if name in result.binds:
                result.binds.remove(name)
    last = tree.body[-1] if tree.body else None
    result.display = isinstance(last, ast.Expr) and not code.rstrip().endswith(";")
    return result


def _conditional(stmt: ast.stmt) -> bool:
    """A statement whose bindings may not happen at all, so later reads may still see the namespace's value."""
    return isinstance(stmt, (ast.For, ast.AsyncFor, ast.While, ast.If, ast.Try, ast.With, ast.AsyncWith, ast.Match))


def inputs_from(analysis: Analysis, namespace: dict[str, object]) -> list[str]:
    """Names the cell reads that the namespace defines; builtins are left to the remote side's own."""
    return [
        name
        for name in analysis.reads
        if name in namespace and not (hasattr(builtins, name) and namespace[name] is getattr(builtins, name))
    ]


def outputs_from(analysis: Analysis) -> list[str]:
    return [name for name in analysis.binds if not name.startswith("__")]
