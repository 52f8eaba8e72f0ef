"""Print what each module of assistant/ and plugins/ imports; fail on a cycle or an upward import.

    python scripts/import_graph.py [REPO]        # exit status 1 when an edge is wrong

Imports are read from the source with ``ast``: at module level, inside functions and under
``if TYPE_CHECKING:`` alike, since each is a dependency all the same. ``plugins/X.py`` is the
module ``assistant.plugins.X`` and ``web/`` is ``assistant.web`` (their names when installed).
``from . import name`` is an import of the submodule ``name`` when there is one, else of the
package itself (``from . import __version__`` imports ``assistant``, the Python API).

A module may import modules of its own layer or of a layer below it (LAYERS, lowest first).
Each problem is printed on one line naming the importing file and line: an upward import, a
cycle (every edge of it), or a module that is in no layer.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

# Lowest first: the web page calls the server, the server the workers, they the chat layer, it
# the core. The entry points (command line, benchmarks, the Python API) sit on top.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("core", ("assistant.core", "assistant.core.*")),
    ("base", ("assistant.errors", "assistant.version", "assistant.config", "assistant.formats",
              "assistant.hookspecs", "assistant.toolcalls", "assistant.tools", "assistant.plugin_manager",
              "assistant.store", "assistant.diagnostics", "assistant.pull", "assistant.quantize",
              "assistant.perplexity", "assistant.events")),
    ("plugins", ("assistant.plugins", "assistant.plugins.*")),
    ("chat", ("assistant.loading", "assistant.chat")),
    ("workers", ("assistant.worker", "assistant.process")),
    ("server", ("assistant.server", "assistant.state", "assistant.http", "assistant.pages",
                "assistant.api_conversations", "assistant.chat_socket", "assistant.answer_job",
                "assistant.openai_api", "assistant.openai_request", "assistant.openai_output", "assistant.web")),
    ("entry", ("assistant", "assistant.__main__", "assistant.cli", "assistant.bench", "assistant.info")),
)

# Where each top-level folder's modules live when the package is installed.
ROOTS = (("assistant", "assistant"), ("plugins", "assistant.plugins"), ("web", "assistant.web"))


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    where: str  # the file and every line importing dst: "assistant/cli.py:15,98"


def module_files(repo: Path) -> dict[str, Path]:
    """Module name -> source file, for every .py under the roots."""
    out: dict[str, Path] = {}
    for folder, package in ROOTS:
        base = repo / folder
        for path in sorted(base.rglob("*.py")):
            rel = path.relative_to(base).with_suffix("").parts
            if rel[-1] == "__init__":
                rel = rel[:-1]
            out[".".join((package, *rel))] = path
    return out


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """``name`` or its longest prefix that is one of ours (None: not ours)."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in modules:
            return candidate
    return None


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool,
             modules: dict[str, Path]) -> list[str]:
    if isinstance(node, ast.Import):
        return [t for a in node.names if (t := _resolve(a.name, modules))]
    if node.level:
        package = module.split(".") if is_package else module.split(".")[:-1]
        base = package[:len(package) - (node.level - 1)]
        origin = ".".join(base + ([node.module] if node.module else []))
    else:
        origin = node.module or ""
    out = []
    for alias in node.names:
        sub = f"{origin}.{alias.name}"
        target = sub if sub in modules else _resolve(origin, modules)
        if target:
            out.append(target)
    return out


def imports_of(repo: Path, module: str, path: Path, modules: dict[str, Path]) -> list[Edge]:
    """One edge per module of ours that ``path`` imports (module level or not)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    lines: dict[str, set[int]] = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for target in _targets(node, module, path.name == "__init__.py", modules):
                if target != module:
                    lines.setdefault(target, set()).add(node.lineno)
    rel = path.relative_to(repo).as_posix()
    edges = [Edge(module, t, f"{rel}:{','.join(map(str, sorted(ns)))}") for t, ns in lines.items()]
    return sorted(edges, key=lambda e: e.dst)


def layer_of(module: str) -> int:
    """Index in LAYERS (-1: in no layer)."""
    for i, (_name, patterns) in enumerate(LAYERS):
        if any(fnmatchcase(module, p) for p in patterns):
            return i
    return -1


def upward(edges: list[Edge]) -> list[str]:
    out = []
    for e in edges:
        lo, hi = layer_of(e.src), layer_of(e.dst)
        if lo >= 0 and hi > lo:
            out.append(f"upward: {e.where}: {e.src} ({LAYERS[lo][0]}) imports {e.dst} ({LAYERS[hi][0]})")
    return out


def cycles(graph: dict[str, list[Edge]]) -> list[list[Edge]]:
    """One cycle through each strongly connected component of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's algorithm; the graph has a few dozen nodes
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for e in graph.get(v, []):
            if e.dst not in index:
                visit(e.dst)
                low[v] = min(low[v], low[e.dst])
            elif e.dst in on_stack:
                low[v] = min(low[v], index[e.dst])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_cycle_in(comp, graph) for comp in components]


def _cycle_in(comp: list[str], graph: dict[str, list[Edge]]) -> list[Edge]:
    """A shortest cycle through the component's first module (breadth-first back to it)."""
    members = set(comp)
    start = comp[0]
    came: dict[str, Edge] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for e in graph.get(v, []):
                if e.dst == start:
                    path = [e]
                    while path[0].src != start:
                        path.insert(0, came[path[0].src])
                    return path
                if e.dst in members and e.dst not in came:
                    came[e.dst] = e
                    nxt.append(e.dst)
        frontier = nxt
    return []


def check(repo: Path) -> tuple[dict[str, list[Edge]], list[str]]:
    """(imports of each module, the problems: one line each)."""
    modules = module_files(repo)
    graph = {m: imports_of(repo, m, p, modules) for m, p in modules.items()}
    problems = [f"no layer: {modules[m].relative_to(repo).as_posix()}: {m} is in no layer; add it to LAYERS "
                f"in scripts/import_graph.py" for m in graph if layer_of(m) < 0]
    for edges in graph.values():
        problems.extend(upward(edges))
    for cyc in cycles(graph):
        chain = " -> ".join([e.src for e in cyc] + [cyc[0].src])
        problems.append(f"cycle: {chain} (at {', '.join(e.where for e in cyc)})")
    return graph, problems


def main(argv: list[str]) -> int:
    repo = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parents[1]
    graph, problems = check(repo)
    print("layers, lowest first: " + " < ".join(name for name, _patterns in LAYERS))
    for name, edges in graph.items():
        layer = layer_of(name)
        targets = sorted({e.dst for e in edges})
        print(f"{name} [{LAYERS[layer][0] if layer >= 0 else '?'}]: {', '.join(targets) or '-'}")
    print()
    for line in problems:
        print(line)
    print(f"{len(problems)} problem(s) in {len(graph)} modules")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
