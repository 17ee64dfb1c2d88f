"""Static import graph of Python packages, read with :mod:`ast`; nothing is imported or run.

Used by ``tests/test_architecture.py``. Every ``import``/``from ... import`` statement in the
walked packages becomes an :class:`Edge`, wherever it sits: at module level, inside a function
or method (a lazy import still runs, just later) or under ``if TYPE_CHECKING:`` (it does not run,
but it is a dependency all the same; such edges are flagged so that reports can tell them apart).

Resolution follows what the interpreter would load:

* ``import a.b.c`` is an edge to ``a.b.c``;
* ``from a.b import c`` is an edge to ``a.b.c`` when that is a module, else to ``a.b``;
* relative imports are resolved against the importing module's package;
* importing a package is an edge to its ``__init__`` module, which carries the package's name;
* a name that is not a module of the walked packages maps to its longest prefix that is one;
* imports of anything outside the walked packages (stdlib, third party) are dropped.

Parent packages are *not* added as edges (``import a.b.c`` runs ``a/__init__`` too, but counting
that would make every module depend on its top-level package). Dynamic imports
(``importlib.import_module``) are not seen.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Edge:
    """One imported name: ``source`` imports ``target`` at ``path:line``."""

    source: str
    target: str
    path: str  # of the importing file, relative to the walked root, with "/" separators
    line: int
    statement: str  # the import, reduced to the names that lead to target: "from a import b, c"
    lazy: bool  # inside a function, method or lambda
    type_checking: bool  # under ``if TYPE_CHECKING:``

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"

    @property
    def kind(self) -> str:
        if self.type_checking:
            return "TYPE_CHECKING"
        return "function-level" if self.lazy else "module-level"

    def describe(self) -> str:
        """``file:line  statement  [kind]``, the line reports show for this edge."""
        return f"{self.where}  {self.statement}  [{self.kind}]"


@dataclass(frozen=True)
class ImportGraph:
    modules: dict[str, str]  # dotted module name -> file, relative to the walked root
    edges: tuple[Edge, ...]

    def adjacency(self) -> dict[str, set[str]]:
        """Each module's imported modules (self-imports included, so that they show as cycles)."""
        adj: dict[str, set[str]] = {m: set() for m in self.modules}
        for e in self.edges:
            adj[e.source].add(e.target)
        return adj

    def edges_between(self, source: str, target: str) -> list[Edge]:
        return [e for e in self.edges if e.source == source and e.target == target]


def find_modules(root: Path, packages: Sequence[str]) -> dict[str, str]:
    """Every ``.py`` file under each of ``packages`` (directories in ``root``), by module name."""
    modules: dict[str, str] = {}
    for package in packages:
        base = root / package
        if not (base / "__init__.py").is_file():
            raise FileNotFoundError(f"{base} is not a package (no __init__.py)")
        for path in sorted(base.rglob("*.py")):
            rel = path.relative_to(root)
            parts = list(rel.with_suffix("").parts)
            if "__pycache__" in parts or not all(p.isidentifier() for p in parts):
                continue
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = rel.as_posix()
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


class _Collector(ast.NodeVisitor):
    def __init__(self, module: str, path: str, modules: Mapping[str, str], roots: set[str]):
        self.module = module
        self.path = path
        self.modules = modules
        self.roots = roots
        self.is_package = path.endswith("/__init__.py")
        self.depth = 0  # functions entered
        self.tc = 0  # TYPE_CHECKING blocks entered
        self.edges: list[Edge] = []

    # context ---------------------------------------------------------------------------------
    def _in_function(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _in_function

    def visit_If(self, node: ast.If) -> None:
        negated = isinstance(node.test, ast.UnaryOp) and isinstance(node.test.op, ast.Not)
        test = node.test.operand if negated else node.test
        if not _is_type_checking(test):
            self.generic_visit(node)
            return
        checked, runtime = (node.orelse, node.body) if negated else (node.body, node.orelse)
        self.tc += 1
        for stmt in checked:
            self.visit(stmt)
        self.tc -= 1
        for stmt in runtime:
            self.visit(stmt)

    # imports ---------------------------------------------------------------------------------
    def _add(self, node: ast.stmt, candidate: str, statement: str) -> None:
        if candidate.split(".")[0] not in self.roots:
            return
        target = candidate
        while target not in self.modules and "." in target:
            target = target.rsplit(".", 1)[0]
        if target not in self.modules:
            return
        self.edges.append(
            Edge(
                source=self.module,
                target=target,
                path=self.path,
                line=node.lineno,
                statement=statement,
                lazy=self.depth > 0,
                type_checking=self.tc > 0,
            )
        )

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(node, alias.name, f"import {alias.name}")

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            package = self.module.split(".")
            if not self.is_package:
                package.pop()
            up = node.level - 1
            if up > len(package) - 1:  # beyond the top-level package: not ours to judge
                return
            package = package[: len(package) - up]
            base = ".".join([*package, base] if base else package)
        shown = "." * node.level + (node.module or "")
        names: dict[str, list[str]] = {}  # candidate -> the imported names that lead there
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            candidate = submodule if alias.name != "*" and submodule in self.modules else base
            names.setdefault(candidate, []).append(alias.name)
        for candidate, imported in names.items():
            self._add(node, candidate, f"from {shown} import {', '.join(imported)}")


def collect_imports(root: Path, packages: Sequence[str]) -> ImportGraph:
    """The import graph of ``packages`` (top-level package directories under ``root``)."""
    modules = find_modules(root, packages)
    edges: list[Edge] = []
    for module, rel in modules.items():
        tree = ast.parse((root / rel).read_text(encoding="utf-8"), filename=rel)
        collector = _Collector(module, rel, modules, set(packages))
        collector.visit(tree)
        edges.extend(collector.edges)
    return ImportGraph(modules=modules, edges=tuple(edges))


# cycles ----------------------------------------------------------------------------------------


def _strongly_connected(adj: Mapping[str, Iterable[str]]) -> list[set[str]]:
    """Tarjan's strongly connected components (iterative, so deep graphs cannot overflow)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[set[str]] = []
    for start in sorted(adj):
        if start in index:
            continue
        work = [(start, iter(sorted(adj[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, it = work[-1]
            for nxt in it:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(adj.get(nxt, ())))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp: set[str] = set()
                    while True:
                        m = stack.pop()
                        on_stack.discard(m)
                        comp.add(m)
                        if m == node:
                            break
                    out.append(comp)
    return out


def _cycles_through(
    start: str, adj: Mapping[str, Iterable[str]], allowed: set[str], out: list, limit: int
) -> bool:
    """Append every simple cycle from ``start`` back to it through ``allowed``; False at limit."""
    path = [start]

    def extend(node: str) -> bool:
        for nxt in sorted(adj.get(node, ())):
            if nxt == start:
                out.append(list(path))
                if len(out) >= limit:
                    return False
            elif nxt in allowed and nxt not in path:
                path.append(nxt)
                ok = extend(nxt)
                path.pop()
                if not ok:
                    return False
        return True

    return extend(start)


def find_cycles(adj: Mapping[str, Iterable[str]], limit: int = 1000) -> list[list[str]]:
    """Every elementary cycle of ``adj``, each as ``[m0, m1, ..., mk]`` (``mk`` imports ``m0``).

    Each cycle is listed once, starting at its alphabetically smallest module; a module that
    imports itself is the cycle ``[m]``. Shortest cycles first; stops after ``limit`` cycles.
    """
    cycles: list[list[str]] = []
    for comp in _strongly_connected(adj):
        for start in sorted(comp):
            allowed = {m for m in comp if m > start}
            if not _cycles_through(start, adj, allowed, cycles, limit):
                break
        if len(cycles) >= limit:
            break
    return sorted(cycles, key=lambda c: (len(c), c))


def format_cycles(graph: ImportGraph, cycles: Sequence[Sequence[str]]) -> str:
    """Each cycle as its module chain, then the import statements that close it."""
    lines = []
    for i, cycle in enumerate(cycles, 1):
        chain = [*cycle, cycle[0]]
        lines.append(f"cycle {i}: " + " -> ".join(chain))
        for src, dst in zip(chain, chain[1:], strict=False):
            for e in graph.edges_between(src, dst):
                lines.append(f"    {e.describe()}")
    return "\n".join(lines)


# layers ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layer:
    """A layer-group of modules; see the layer table in ``tests/test_architecture.py``."""

    level: int
    name: str
    subtrees: tuple[str, ...] = ()  # each: that module and every module below it
    modules: tuple[str, ...] = ()  # exactly these modules (e.g. a package's __init__ alone)
    optional: tuple[str, ...] = ()  # entries above that may not exist (yet)
    ceiling: int | None = None  # highest *other* layer its modules may import; default: own

    def covers(self, module: str) -> int:
        """How specifically this layer names ``module``: -1 not at all, else the match length."""
        if module in self.modules:
            return len(module) + 1  # an exact entry beats any subtree
        hits = [len(s) for s in self.subtrees if module == s or module.startswith(s + ".")]
        return max(hits, default=-1)

    @property
    def label(self) -> str:
        return f"layer {self.level} ({self.name})"


def layer_of(module: str, layers: Sequence[Layer]) -> Layer | None:
    """The layer that names ``module`` most specifically, or None."""
    best = max(layers, key=lambda layer: layer.covers(module))
    return best if best.covers(module) >= 0 else None


def unassigned_modules(graph: ImportGraph, layers: Sequence[Layer]) -> list[str]:
    return sorted(m for m in graph.modules if layer_of(m, layers) is None)


def stale_entries(graph: ImportGraph, layers: Sequence[Layer]) -> list[str]:
    """Table entries that name no existing module (and are not marked optional)."""
    return sorted(
        entry
        for layer in layers
        for entry in (*layer.subtrees, *layer.modules)
        if entry not in graph.modules and entry not in layer.optional
    )


def _in(module: str, subtree: str) -> bool:
    return module == subtree or module.startswith(subtree + ".")


@dataclass(frozen=True)
class Violation:
    edge: Edge
    reason: str

    def describe(self) -> str:
        return f"{self.edge.describe()}\n    {self.reason}"


def layer_violations(
    graph: ImportGraph,
    layers: Sequence[Layer],
    sole_importers: Mapping[str, Sequence[str]] | None = None,
) -> list[Violation]:
    """Edges that go up a layer, or into a subtree guarded by ``sole_importers``.

    ``sole_importers`` maps a subtree to the only modules outside it that may import it; for
    those modules that import is allowed whatever the layers say. Edges from or to modules
    without a layer are skipped (:func:`unassigned_modules` reports those).
    """
    sole_importers = sole_importers or {}
    found = []
    for e in graph.edges:
        src, dst = layer_of(e.source, layers), layer_of(e.target, layers)
        if src is None or dst is None:
            continue
        guarded = [s for s in sole_importers if _in(e.target, s) and not _in(e.source, s)]
        if guarded:
            allowed = sole_importers[guarded[0]]
            if e.source not in allowed:
                who = ", ".join(allowed)
                reason = f"only {who} may import {guarded[0]}: {e.source} -> {e.target}"
                found.append(Violation(e, reason))
            continue
        ceiling = src.level if src.ceiling is None else src.ceiling
        if dst.level != src.level and dst.level > ceiling:
            limit = "" if src.ceiling is None else f", may import layers <= {ceiling} only"
            reason = f"up a layer: {e.source} [{src.label}{limit}] -> {e.target} [{dst.label}]"
            found.append(Violation(e, reason))
    return sorted(found, key=lambda v: (v.edge.path, v.edge.line, v.edge.target))
