"""Architecture: the import graph of ``online_dt`` and ``actors`` has no cycles and no upward edges.

The graph is read statically (``tests/import_graph.py``, with :mod:`ast`; nothing is imported),
and counts every import: module-level ones, lazy ones inside functions and methods, and those
under ``if TYPE_CHECKING:``. A lazy import hides a cycle from the interpreter only until the
function runs, and a TYPE_CHECKING import is still a dependency, so neither is an excuse.

The first half checks the real project against :data:`LAYERS`; the second half checks the
walker itself on throwaway packages with known defects (negative controls), so that a clean
result on the project means something.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.import_graph import (
    ImportGraph,
    Layer,
    collect_imports,
    find_cycles,
    format_cycles,
    layer_of,
    layer_violations,
    stale_entries,
    unassigned_modules,
)

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("online_dt", "actors")

LAYERS = (
    Layer(
        0,
        "foundations",
        subtrees=(
            "online_dt.config",
            "online_dt.util",
            "online_dt.samples",
            "online_dt.objectives",
        ),
    ),
    Layer(
        1, "model and data", subtrees=("online_dt.policy", "online_dt.rewards", "online_dt.replay")
    ),
    Layer(2, "model sources and sampling", subtrees=("online_dt.embedded", "online_dt.rollout")),
    Layer(3, "launch", subtrees=("online_dt.launch",)),
    Layer(4, "training", subtrees=("online_dt.training",)),
    Layer(5, "loop", subtrees=("online_dt.loop",)),
    Layer(6, "eval and dashboard", subtrees=("online_dt.eval", "online_dt.dashboard")),
    Layer(
        7,
        "entry points",
        subtrees=(
            "online_dt.offline",
            "online_dt.run",
            "online_dt.cli",
            "online_dt.cli_eval",
            "online_dt.arguments",
            "online_dt.__main__",
        ),
        modules=("online_dt",),
    ),
    Layer(8, "Ray actors", subtrees=("actors",), ceiling=6),
)
"""The project's layers, lowest first: its architecture (docs/architecture.md is to say the same).

Rule: a module may import modules of its own layer-group and of lower layers, never of a higher
one. Inside a layer-group (and so inside one subpackage) anything goes, except cycles.

Each entry of ``subtrees`` covers that module and everything below it (``online_dt.config``
covers ``online_dt.config.placement``); ``modules`` are exact (``online_dt`` is the package's
``__init__`` only, so a new ``online_dt.foo`` is not silently put on layer 7). The most specific
entry wins. Every module under ``online_dt/`` and ``actors/`` must be covered: a new subpackage
has to be placed here deliberately. ``optional`` entries may name modules that do not exist yet.

0. foundations: ``config`` (schemas, loading, placement plans) and ``util`` (atomic writes,
   metrics); they import nothing of the project above them.
1. model and data: ``policy`` (the reward-conditioned model), ``rewards``, ``replay`` (the
   buffer) and ``samples`` (may be added later).
2. model sources and sampling: ``embedded`` (the built-in base model and corpus) and
   ``rollout`` (samplers and weight sync).
3. ``launch``: run directories, prompts, preflight checks.
4. ``training``: the trainer and the learner.
5. ``loop``: the online loop, its schedule, scoring and worker handles.
6. ``eval`` (calibration) and ``dashboard``: they read what runs produce.
7. entry points: ``offline``, ``run``, ``cli`` (with ``cli_eval``, its ``eval`` subcommand),
   ``__main__`` and the ``online_dt`` package
   itself; nothing below may reach back up to them.
8. ``actors``: the thin Ray layer. ``ceiling=6``: it may import online_dt layers 0-6 (and
   itself), but not the entry points (``run``, ``cli``, ``offline``); the entry points call it,
   not the other way round.

See :data:`SOLE_IMPORTERS` for the one sanctioned edge that points up: ``online_dt.run`` -> actors.
"""

SOLE_IMPORTERS = {"actors": ("online_dt.run",)}
"""Subtrees that only the listed modules (outside the subtree) may import, whatever the layers.

``online_dt.run`` is where a run is handed to Ray, so it alone imports ``actors`` (lazily, so
that the core never needs Ray installed); any other online_dt module importing actors fails.
"""


@pytest.fixture(scope="module")
def graph() -> ImportGraph:
    return collect_imports(ROOT, PACKAGES)


# the project --------------------------------------------------------------------------------


def test_every_module_has_a_layer(graph):
    missing = unassigned_modules(graph, LAYERS)
    if missing:
        pytest.fail(
            f"{len(missing)} module(s) belong to no layer; place them in LAYERS "
            "(tests/test_architecture.py) deliberately:\n"
            + "\n".join(f"  {m}  ({graph.modules[m]})" for m in missing),
            pytrace=False,
        )


def test_layer_table_names_existing_modules(graph):
    stale = stale_entries(graph, LAYERS)
    if stale:
        pytest.fail(
            "LAYERS names modules that do not exist (renamed or removed? or mark optional):\n"
            + "\n".join(f"  {m}" for m in stale),
            pytrace=False,
        )


def test_no_import_cycles(graph):
    cycles = find_cycles(graph.adjacency())
    if cycles:
        pytest.fail(
            f"{len(cycles)} import cycle(s) between modules (function-level and TYPE_CHECKING "
            "imports count):\n" + format_cycles(graph, cycles),
            pytrace=False,
        )


def test_no_upward_imports(graph):
    found = layer_violations(graph, LAYERS, SOLE_IMPORTERS)
    if found:
        pytest.fail(
            f"{len(found)} import(s) go up a layer (see LAYERS in tests/test_architecture.py):\n"
            + "\n".join(v.describe() for v in found),
            pytrace=False,
        )


# negative controls: the walker on throwaway packages -------------------------------------


def write_package(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")


TOY_LAYERS = (
    Layer(0, "low", subtrees=("pkg.low", "pkg.sub")),
    Layer(1, "high", subtrees=("pkg.high",), modules=("pkg",)),
)

PLANTED = {
    "pkg/__init__.py": '"""Toy package."""\n',
    # decoys: a docstring that mentions an import, stdlib and third-party imports
    "pkg/low.py": '''
        """Low layer. Mentions `import pkg.high` only in text."""
        import os
        import numpy

        CONST = 1


        def helper():
            from pkg.high import thing  # the planted upward import (line 10)

            return thing
        ''',
    "pkg/high.py": """
        from pkg import sub
        from pkg.sub import a, b
        from pkg.sub.b import value

        thing = value + len(sub.__name__) + len(a.__name__) + len(b.__name__)
        """,
    "pkg/sub/__init__.py": "",
    "pkg/sub/a.py": """
        from pkg.sub.b import value


        def f():
            return value
        """,
    "pkg/sub/b.py": """
        value = 2


        class B:
            def method(self):
                from . import a  # the planted cycle, hidden in a method (line 7)

                return a
        """,
}


def test_walker_reports_exactly_the_planted_cycle_and_upward_import(tmp_path):
    write_package(tmp_path, PLANTED)
    g = collect_imports(tmp_path, ["pkg"])

    assert find_cycles(g.adjacency()) == [["pkg.sub.a", "pkg.sub.b"]]
    text = format_cycles(g, find_cycles(g.adjacency()))
    assert "cycle 1: pkg.sub.a -> pkg.sub.b -> pkg.sub.a" in text
    assert "pkg/sub/b.py:7  from . import a  [function-level]" in text

    found = layer_violations(g, TOY_LAYERS)
    assert [(v.edge.source, v.edge.target, v.edge.where) for v in found] == [
        ("pkg.low", "pkg.high", "pkg/low.py:10")
    ]
    assert found[0].reason == ("up a layer: pkg.low [layer 0 (low)] -> pkg.high [layer 1 (high)]")
    assert unassigned_modules(g, TOY_LAYERS) == []


def test_walker_resolves_from_imports_relative_imports_and_packages(tmp_path):
    write_package(tmp_path, PLANTED)
    g = collect_imports(tmp_path, ["pkg"])
    edges = {(e.source, e.target, e.statement) for e in g.edges}
    assert edges == {
        ("pkg.low", "pkg.high", "from pkg.high import thing"),
        # pkg.sub is a module (a package's __init__), so the edge goes there, not to pkg
        ("pkg.high", "pkg.sub", "from pkg import sub"),
        # two submodules from one statement: one edge each
        ("pkg.high", "pkg.sub.a", "from pkg.sub import a"),
        ("pkg.high", "pkg.sub.b", "from pkg.sub import b"),
        # `value` is no module: the edge goes to pkg.sub.b itself
        ("pkg.high", "pkg.sub.b", "from pkg.sub.b import value"),
        ("pkg.sub.a", "pkg.sub.b", "from pkg.sub.b import value"),
        ("pkg.sub.b", "pkg.sub.a", "from . import a"),
    }


def test_walker_resolves_nested_relative_imports_and_package_inits(tmp_path):
    write_package(
        tmp_path,
        {
            "pkg/__init__.py": "from .sub import thing\n",
            "pkg/top.py": "VALUE = 1\n",
            "pkg/sub/__init__.py": "from . import deep\nthing = 1\n",
            "pkg/sub/deep.py": (
                "from .. import top\nfrom ..top import VALUE, OTHER\nfrom . import *\n"
            ),
            "pkg/sub/other.py": "import pkg.sub\nimport pkg.sub.deep as d\nfrom ... import x\n",
        },
    )
    g = collect_imports(tmp_path, ["pkg"])
    assert sorted(g.modules) == ["pkg", "pkg.sub", "pkg.sub.deep", "pkg.sub.other", "pkg.top"]
    assert sorted({(e.source, e.target) for e in g.edges}) == [
        ("pkg", "pkg.sub"),  # from .sub import thing: thing is no module -> the package
        ("pkg.sub", "pkg.sub.deep"),  # from . import deep (in an __init__)
        ("pkg.sub.deep", "pkg.sub"),  # from . import *
        ("pkg.sub.deep", "pkg.top"),  # from .. import top / from ..top import VALUE, OTHER
        ("pkg.sub.other", "pkg.sub"),  # import pkg.sub: the __init__
        ("pkg.sub.other", "pkg.sub.deep"),  # import pkg.sub.deep as d
        # from ... import x goes above the top-level package: dropped
    ]
    # names of one statement that lead to the same module make one edge
    assert [e.statement for e in g.edges if e.source == "pkg.sub.deep"] == [
        "from .. import top",
        "from ..top import VALUE, OTHER",
        "from . import *",
    ]
    assert find_cycles(g.adjacency()) == [["pkg.sub", "pkg.sub.deep"]]


def test_walker_marks_function_level_and_type_checking_imports(tmp_path):
    write_package(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "X = 1\n",
            "pkg/b.py": """
                import typing
                from typing import TYPE_CHECKING

                import pkg.a

                if TYPE_CHECKING:
                    from pkg.a import X
                if typing.TYPE_CHECKING:
                    import pkg.c
                else:
                    import pkg.d

                async def f():
                    import pkg.e
                g = lambda: __import__("pkg.f")
                """,
            "pkg/c.py": "",
            "pkg/d.py": "",
            "pkg/e.py": "",
            "pkg/f.py": "",
        },
    )
    g = collect_imports(tmp_path, ["pkg"])
    kinds = {(e.target, e.line): e.kind for e in g.edges}
    assert kinds == {
        ("pkg.a", 5): "module-level",
        ("pkg.a", 8): "TYPE_CHECKING",
        ("pkg.c", 10): "TYPE_CHECKING",
        ("pkg.d", 12): "module-level",
        ("pkg.e", 15): "function-level",
        # __import__("pkg.f") is dynamic: not seen (documented limitation)
    }


def test_find_cycles_lists_every_cycle_of_a_tangle():
    adj = {
        "a": {"b"},
        "b": {"a", "c"},
        "c": {"b", "a"},
        "d": {"d"},  # imports itself
        "e": {"a"},  # depends on the tangle but is on no cycle
    }
    assert find_cycles(adj) == [["d"], ["a", "b"], ["b", "c"], ["a", "b", "c"]]
    assert find_cycles({"x": {"y"}, "y": set()}) == []


def test_layer_rules_ceiling_and_sole_importers(tmp_path):
    write_package(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/core.py": "",
            "pkg/entry.py": "import plug.x\n",  # allowed: the sole importer of plug
            "pkg/stray.py": "import plug.x\n",  # not allowed to import plug
            "pkg/new/__init__.py": "",  # on no layer
            "plug/__init__.py": "",
            "plug/x.py": "import pkg.core\nimport pkg.entry\nfrom . import y\n",
            "plug/y.py": "",
        },
    )
    layers = (
        Layer(0, "core", subtrees=("pkg.core",)),
        Layer(1, "entry", subtrees=("pkg.entry", "pkg.stray"), modules=("pkg",)),
        Layer(2, "plug", subtrees=("plug",), ceiling=0),
        Layer(2, "never", subtrees=("pkg.gone",)),
    )
    g = collect_imports(tmp_path, ["pkg", "plug"])
    assert unassigned_modules(g, layers) == ["pkg.new"]
    assert layer_of("pkg.new", layers) is None
    assert layer_of("pkg", layers).name == "entry"
    assert stale_entries(g, layers) == ["pkg.gone"]
    found = layer_violations(g, layers, {"plug": ("pkg.entry",)})
    assert [(v.edge.source, v.edge.target) for v in found] == [
        ("pkg.stray", "plug.x"),  # only pkg.entry may import plug
        ("plug.x", "pkg.entry"),  # above plug's ceiling although layer 1 < 2
    ]
    assert "only pkg.entry may import plug" in found[0].reason
    assert "[layer 2 (plug), may import layers <= 0 only]" in found[1].reason


def test_clean_package_has_no_violations(tmp_path):
    write_package(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/low.py": "",
            "pkg/sub/__init__.py": "",
            "pkg/sub/a.py": "from pkg import low\nfrom . import b\n",
            "pkg/sub/b.py": "from pkg.low import x\n",
            "pkg/high.py": "from pkg.sub import a\n\ndef f():\n    import pkg.low\n",
        },
    )
    g = collect_imports(tmp_path, ["pkg"])
    assert len(g.edges) == 5
    assert find_cycles(g.adjacency()) == []
    assert layer_violations(g, TOY_LAYERS) == []
    assert unassigned_modules(g, TOY_LAYERS) == []
