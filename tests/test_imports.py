"""No import cycle anywhere in the project, and every import runs down the layers.

The graph is read from the source with `ast` (no module is imported): every `import` and
`from … import …` at any depth — inside functions and `if TYPE_CHECKING:` blocks too, since an
import moved into a function to dodge a cycle is still the cycle. `from pkg import name` counts
as an edge to `pkg` (its `__init__` runs first) and to `pkg.name` when that is a module of ours:
a package `__init__` that imports its modules and a module that imports a sibling through the
package (`from ui.pages import x` inside ui/pages/) are a ring.

The layers, top to bottom (a package may import its own modules and anything below it, never
anything above it):

    run.py                  the one entry point
    cli/                    run.py's subcommands (users, keys, participants, lake, notify)
    bench/                  benchmarks (run by hand)
    sim/                    simulators: gates, sensors, cameras
    ui/                     the dashboard for people: pages, widgets, theme, the app (ui.main)
    api/                    the HTTP API for machines: routers, their registry, request helpers
    auth/                   who may do what: users, keys, sessions, login, the route matrix
    live/                   the web process's Redis side: live models, video hub and rooms
    notify/                 the notifier process (delivery of alarms)
    flows/                  the Bytewax flows
    connectors/             Bytewax sources and sinks (Redis, the lake, cameras)
    ops/                    starting and supervising processes, the embedded redis-server
    storage/                the lake and every query over it
    core/                   what every process shares: settings, keys, records, venue, tokens

Why `live/` sits below `api/` and `auth/`: routes use it (`POST /api/checkins` waits on the
verdict subscriber, `/video/…` streams from the hub, a login is written to the activity log).
`tests/` may import anything and nothing imports it.

Before issue 11 this test failed on `ui.api -> ui.auth_login -> ui.api` (the ui/ ring, dodged
there by imports inside functions).
"""

from __future__ import annotations

import ast
import os
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Top-level package (or module) → layer rank; an import must go to a rank <= its own, and
#: to an equal rank only inside the same package.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("run",),
    ("cli",),
    ("bench",),
    ("sim",),
    ("ui",),
    ("api",),
    ("auth",),
    ("live",),
    ("notify",),
    ("flows",),
    ("connectors",),
    ("ops",),
    ("storage",),
    ("core",),
)
RANK = {pkg: len(LAYERS) - i for i, names in enumerate(LAYERS) for pkg in names}
SKIP = {".venv", ".git", "__pycache__", "data", "node_modules"}


def _sources(root: Path) -> dict[str, Path]:
    """Module name → file, for every .py of the project (tests included)."""
    found: dict[str, Path] = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in SKIP and not d.startswith(".")]
        for file in files:
            if not file.endswith(".py"):
                continue
            parts = list((Path(folder) / file).relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            if parts:
                found[".".join(parts)] = Path(folder) / file
    return found


def _imported(name: str, tree: ast.AST, is_package: bool) -> Iterator[tuple[str, int]]:
    """(imported name, line) for every import statement anywhere in the tree."""
    package = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            if base:  # `from pkg import mod` runs pkg's `__init__` too: an edge to both
                yield base, node.lineno
            for alias in node.names:
                yield f"{base}.{alias.name}" if base else alias.name, node.lineno


def import_graph(root: Path = ROOT) -> dict[str, dict[str, int]]:
    """Module → {project module it imports: first line}."""
    modules = _sources(root)
    graph: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        edges: dict[str, int] = {}
        for target, line in _imported(name, tree, path.name == "__init__.py"):
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                edges.setdefault(target, line)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, dict[str, int]]) -> list[str] | None:
    """One cycle as [a, b, …, a], or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    for start in sorted(graph):
        if state.get(start):
            continue
        path: list[str] = [start]
        stack = [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, {}))))
    return None


def layer_violations(graph: dict[str, dict[str, int]]) -> list[str]:
    """Every import from a lower layer up to a higher one (or across one layer's packages)."""
    bad = []
    for mod, edges in sorted(graph.items()):
        top = mod.split(".")[0]
        if top not in RANK:
            continue  # tests/ (and conftest): may import anything
        for target, line in sorted(edges.items()):
            other = target.split(".")[0]
            if other == top:
                continue
            if other not in RANK:
                bad.append(f"{mod}:{line} imports {target}, which is in no layer")
            elif RANK[other] >= RANK[top]:
                bad.append(f"{mod}:{line} imports {target} ({other}/ is not below {top}/)")
    return bad


def test_every_module_is_in_a_layer() -> None:
    tops = {name.split(".")[0] for name in _sources(ROOT)}
    assert tops - {"tests"} <= set(RANK), f"packages in no layer: {sorted(tops - set(RANK))}"


def test_no_import_cycle() -> None:
    graph = import_graph()
    assert len(graph) > 100  # the whole project was read
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_imports_run_down_the_layers() -> None:
    bad = layer_violations(import_graph())
    assert not bad, "imports against the layers:\n" + "\n".join(bad)


def test_nothing_imports_the_tests() -> None:
    graph = import_graph()
    bad = [
        f"{mod} imports {t}"
        for mod, edges in graph.items()
        if not mod.startswith("tests")
        for t in edges
        if t.startswith("tests")
    ]
    assert not bad, bad


def test_the_checks_catch_a_cycle_and_an_upward_import(tmp_path: Path) -> None:
    """The detectors themselves, on a tiny project: a ring hidden in a function, and core
    importing ui."""
    (tmp_path / "ui").mkdir()
    (tmp_path / "core").mkdir()
    (tmp_path / "ui" / "__init__.py").write_text("")
    (tmp_path / "core" / "__init__.py").write_text("")
    (tmp_path / "ui" / "a.py").write_text("from ui import b\n")
    (tmp_path / "ui" / "b.py").write_text("def f():\n    from . import a\n")
    (tmp_path / "core" / "c.py").write_text("import ui.a\n")
    graph = import_graph(tmp_path)
    assert find_cycle(graph) == ["ui.a", "ui.b", "ui.a"]
    assert layer_violations(graph) == ["core.c:1 imports ui.a (ui/ is not below core/)"]
    (tmp_path / "core" / "d.py").write_text("from core.gone import x\n")
    assert stale_imports(tmp_path) == ["core.d:1 core.gone"]


def stale_imports(root: Path = ROOT) -> list[str]:
    """Every import of a project module that does not exist (a path left behind by a move)."""
    modules = _sources(root)
    ours = {name.split(".")[0] for name in modules}
    missing = []
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets = [node.module]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            missing += [
                f"{name}:{node.lineno} {t}"
                for t in targets
                if t.split(".")[0] in ours and t not in modules
            ]
    return missing


def test_every_import_of_ours_names_a_module() -> None:
    """A stale path (`from core.processes import …` after a move) is named here, not only when
    that code first runs."""
    assert not stale_imports()


def _defined_names(path: Path) -> set[str] | None:
    """The names a module defines at its top level (defs, classes, assignments, imports, also
    inside top-level if/try/with blocks); None if it cannot be known from the source (a star
    import or a module `__getattr__`)."""
    names: set[str] = set()

    def visit(body: list[ast.stmt]) -> bool:
        for node in body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
                if node.name == "__getattr__":
                    return False
            elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for t in targets:
                    names.update(n.id for n in ast.walk(t) if isinstance(n, ast.Name))
            elif isinstance(node, ast.Import | ast.ImportFrom):
                for alias in node.names:
                    if alias.name == "*":
                        return False
                    names.add(alias.asname or alias.name.split(".")[0])
            elif isinstance(node, ast.If | ast.Try | ast.With):
                blocks = [node.body, getattr(node, "orelse", []), getattr(node, "finalbody", [])]
                blocks += [h.body for h in getattr(node, "handlers", [])]
                if not all(visit(b) for b in blocks):
                    return False
        return True

    return names if visit(ast.parse(path.read_text(encoding="utf-8")).body) else None


def missing_names(root: Path = ROOT) -> list[str]:
    """Every `from <our module> import name` whose name that module does not define (a
    function moved elsewhere while its importers still ask the old module for it)."""
    modules = _sources(root)
    defined: dict[str, set[str] | None] = {}
    missing = []
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.ImportFrom) and node.module and not node.level):
                continue
            if node.module not in modules:
                continue
            if node.module not in defined:
                defined[node.module] = _defined_names(modules[node.module])
            have = defined[node.module]
            if have is None:
                continue
            missing += [
                f"{name}:{node.lineno} {node.module}.{a.name}"
                for a in node.names
                if a.name not in have and f"{node.module}.{a.name}" not in modules
            ]
    return missing


def test_every_name_imported_from_our_modules_exists(tmp_path: Path) -> None:
    """`from storage.lake import lake_from_settings` after that function moved to
    `core.lake_location` broke `bench/ingest.py` only when it ran (found by hand after the
    restructure); named here instead. The detector is tried on a tiny project first."""
    (tmp_path / "core").mkdir()
    (tmp_path / "core" / "__init__.py").write_text("")
    (tmp_path / "core" / "a.py").write_text(
        "X = 1\ntry:\n    import os\nexcept ImportError:\n    pass\n"
    )
    (tmp_path / "core" / "b.py").write_text("from core.a import X, os, gone\nfrom core import a\n")
    assert missing_names(tmp_path) == ["core.b:1 core.a.gone"]
    assert not missing_names()
