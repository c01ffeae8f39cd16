"""The import graph of mega-rt's own modules, and its circles.

    python -m tests.import_graph            # prints every import circle (strongly connected module group)
    python -m tests.import_graph --edges    # also prints each module's imports of project modules

Every import counts, at module level or inside a function: a lazy import hides a circle from Python, not
from the reader. Exit code 1 when a circle exists.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("train", "engines", "realtime")


def project_modules(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the three packages."""
    mods = {}
    for pkg in PACKAGES:
        for p in sorted((root / pkg).rglob("*.py")):
            if "__pycache__" in p.parts:
                continue
            parts = p.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = p
    return mods


def _resolve(name: str, mods: dict[str, Path]) -> str | None:
    """The project module `name` lives in: itself, or its nearest enclosing package."""
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def module_imports(module: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """The project modules that `module` imports anywhere in its text (relative imports resolved)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            # `from pkg import sub` imports the submodule pkg.sub when there is one
            targets = [f"{origin}.{a.name}" if f"{origin}.{a.name}" in mods else origin for a in node.names]
        else:
            continue
        for t in targets:
            hit = _resolve(t, mods)
            if hit and hit != module:
                found.add(hit)
    return found


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    mods = project_modules(root)
    return {m: module_imports(m, p, mods) for m, p in mods.items()}


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Groups of modules that import each other (Tarjan's strongly connected components of size > 1)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph) + 100))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(cycles)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edges", action="store_true", help="also print each module's project imports")
    args = parser.parse_args(argv)
    graph = import_graph()
    if args.edges:
        for m in sorted(graph):
            print(f"{m} -> {' '.join(sorted(graph[m])) or '-'}")
    cycles = import_cycles(graph)
    print(f"{len(graph)} modules, {sum(len(v) for v in graph.values())} imports, {len(cycles)} import circles")
    for c in cycles:
        print("  circle: " + " <-> ".join(c))
    return 1 if cycles else 0


if __name__ == "__main__":
    sys.exit(main())
