"""What a cell reads from the namespace and what it binds there, found with `ast` and `symtable` before it runs."""

from __future__ import annotations

import ast
import builtins
import symtable
from dataclasses import dataclass, field


@dataclass
class Analysis:
    """Names in statement order (sorted within a statement); `display`: the cell ends in an expression to show."""

    reads: list[str] = field(default_factory=list)
    binds: list[str] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)
    imports: list[str] = field(default_factory=list)  # names bound by import statements
    stars: list[str] = field(default_factory=list)  # modules of `from M import *`: names no one can list here
    display: bool = False


class CellSyntaxError(SyntaxError):
    pass


def _add(names: list[str], name: str) -> None:
    if name not in names:
        names.append(name)


class _Binder(ast.NodeVisitor):
    """Top-level effects of one statement. Function, lambda and class bodies are scopes of their own: only what
    runs at top level (decorators, defaults, a comprehension's walrus) binds in the cell."""

    def __init__(self) -> None:
        self.binds: list[str] = []
        self.deletes: list[str] = []
        self.augmented: list[str] = []  # `x += 1` reads x
        self.later: list[str] = []  # `global x` in a function binds x only if the function is called
        self.imports: list[str] = []
        self.stars: list[str] = []

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Store):
            _add(self.binds, node.id)
        elif isinstance(node.ctx, ast.Del):
            _add(self.deletes, node.id)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        if isinstance(node.target, ast.Name):
            _add(self.augmented, node.target.id)
        self.generic_visit(node)

    def _arguments(self, args: ast.arguments) -> None:
        for default in [*args.defaults, *args.kw_defaults]:
            if default is not None:
                self.visit(default)

    def _define(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
        _add(self.binds, node.name)
        for deco in node.decorator_list:
            self.visit(deco)
        if isinstance(node, ast.ClassDef):
            for base in [*node.bases, *node.keywords]:
                self.visit(base)
        else:
            self._arguments(node.args)
        for sub in ast.walk(node):
            if isinstance(sub, ast.Global):
                for name in sub.names:
                    _add(self.later, name)

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _define

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self._arguments(node.args)

    def _comprehension(self, node: ast.ListComp | ast.SetComp | ast.DictComp | ast.GeneratorExp) -> None:
        """Its loop variables are its own; a walrus in it binds in the cell (unless inside a lambda there)."""
        pending: list[ast.AST] = [node]
        while pending:
            sub = pending.pop()
            if isinstance(sub, ast.NamedExpr) and isinstance(sub.target, ast.Name):
                _add(self.binds, sub.target.id)
            if not isinstance(sub, (ast.Lambda, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                pending.extend(ast.iter_child_nodes(sub))

    visit_ListComp = visit_SetComp = visit_DictComp = visit_GeneratorExp = _comprehension

    def visit_Import(self, node: ast.Import | ast.ImportFrom) -> None:
        for alias in node.names:
            if alias.name == "*" and isinstance(node, ast.ImportFrom):
                _add(self.stars, "." * node.level + (node.module or ""))
            elif alias.name != "*":
                _add(self.binds, alias.asname or alias.name.split(".")[0])
                _add(self.imports, alias.asname or alias.name.split(".")[0])

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


def _lookups(node: ast.AST) -> set[str]:
    """Names the code looks up in the module namespace, from any of its scopes (functions, comprehensions)."""
    source = ast.unparse(node)
    top = symtable.symtable(source, "<cell>", "exec")
    found = {s.get_name() for s in top.get_symbols() if s.is_referenced()}
    tables = top.get_children()
    while tables:
        table = tables.pop()
        found.update(s.get_name() for s in table.get_symbols() if s.is_global() and s.is_referenced())
        tables.extend(table.get_children())
    return found


def _header(stmt: ast.stmt) -> tuple[set[str], set[str]] | None:
    """For `for`/`with`: (names the header binds, names the header reads): the body sees the bound ones."""
    if isinstance(stmt, (ast.For, ast.AsyncFor)):
        targets, exprs = [stmt.target], [stmt.iter]
    elif isinstance(stmt, (ast.With, ast.AsyncWith)):
        targets = [i.optional_vars for i in stmt.items if i.optional_vars is not None]
        exprs = [i.context_expr for i in stmt.items]
    else:
        return None
    bound = {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    return bound, set().union(*(_lookups(ast.Expression(e)) for e in exprs))


def _reads(stmt: ast.stmt, binder: _Binder) -> set[str]:
    reads = _lookups(stmt) | set(binder.augmented) | set(binder.deletes)  # `del x` needs x too
    header = _header(stmt)
    if header is not None:
        bound, header_reads = header
        reads = {n for n in reads if n not in bound or n in header_reads}
    return reads


_CONDITIONAL = (ast.For, ast.AsyncFor, ast.While, ast.If, ast.Try, ast.With, ast.AsyncWith, ast.Match)


def parse_cell(code: str, filename: str = "<cell>", line_offset: int = 0) -> ast.Module:
    try:
        return ast.parse(code, filename)
    except SyntaxError as err:
        line = (err.lineno or 0) + line_offset
        raise CellSyntaxError(f"syntax error in the cell, line {line}: {err.msg}") from None


def analyse(tree: ast.Module, code: str) -> Analysis:
    """Reads are names used before the cell surely binds them; binds minus later deletes are outputs."""
    result = Analysis()
    bound: set[str] = set()  # surely bound by an earlier top-level statement
    for stmt in tree.body:
        binder = _Binder()
        binder.visit(stmt)
        for name in sorted(_reads(stmt, binder) - bound):
            _add(result.reads, name)
        for name in [*binder.binds, *binder.later]:
            _add(result.binds, name)
            if name in result.deletes:
                result.deletes.remove(name)
        if not isinstance(stmt, _CONDITIONAL):  # a loop or branch may not bind at all
            bound.update(binder.binds)
        for name in binder.imports:
            _add(result.imports, name)
        for module in binder.stars:
            _add(result.stars, module)
        for name in binder.deletes:
            _add(result.deletes, name)
            bound.discard(name)
            if name in result.binds:
                result.binds.remove(name)
    last = tree.body[-1] if tree.body else None
    result.display = isinstance(last, ast.Expr) and not code.rstrip().endswith(";")
    return result


def inputs_from(analysis: Analysis, namespace: dict[str, object]) -> list[str]:
    """Names the cell reads that the namespace defines; builtins are left to the remote side's own."""
    return [
        name
        for name in analysis.reads
        if name in namespace and not (hasattr(builtins, name) and namespace[name] is getattr(builtins, name))
    ]


def outputs_from(analysis: Analysis) -> list[str]:
    return [name for name in analysis.binds if not name.startswith("__")]
