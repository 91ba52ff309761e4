"""Fails when the application's modules import each other in a circle.

Counts every import statement, those inside functions too (grimp reads them all); imports under
``if TYPE_CHECKING:`` are left out, as they never run. Tests, benches and migrations are not
application code and are left out. Run by ``make lint``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import grimp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PACKAGES = (
    "accounts",
    "api",
    "config",
    "connectors",
    "exceptions_inbox",
    "eventgen",
    "monitoring",
    "outbound",
)


def _excluded(module: str) -> bool:
    return ".migrations" in module or module.startswith(("tests", "bench"))


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components of two or more modules (Tarjan's algorithm, iterative)."""
    modules = sorted(m for m in graph.modules if m.split(".")[0] in PACKAGES and not _excluded(m))
    edges = {
        m: sorted(
            t
            for t in graph.find_modules_directly_imported_by(m)
            if t in graph.modules and t.split(".")[0] in PACKAGES and not _excluded(t)
        )
        for m in modules
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in modules:
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            targets = edges[node]
            if i < len(targets):
                work.append((node, i + 1))
                target = targets[i]
                if target not in index:
                    work.append((target, 0))
                elif target in on_stack:
                    low[node] = min(low[node], index[target])
                continue
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return found


def _shortest_loop(graph: grimp.ImportGraph, component: list[str]) -> list[str]:
    """The shortest way from the component's first module back to itself, within it."""
    inside = set(component)
    start = component[0]
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for module in frontier:
            for target in sorted(graph.find_modules_directly_imported_by(module) & inside):
                if target == start:
                    loop = [module]
                    while loop[-1] != start:
                        loop.append(came_from[loop[-1]])
                    return [start, *reversed(loop[:-1]), start]
                if target not in came_from:
                    came_from[target] = module
                    following.append(target)
        frontier = following
    return component


def main() -> int:
    graph = grimp.build_graph(*PACKAGES, exclude_type_checking_imports=True)
    cycles = _cycles(graph)
    for component in cycles:
        print(f"Import cycle among {len(component)} modules: {', '.join(component)}")
        loop = _shortest_loop(graph, component)
        print("  for one, each importing the next:")
        for importer, imported in zip(loop, loop[1:], strict=False):
            lines = graph.get_import_details(importer=importer, imported=imported)
            where = ", ".join(str(d["line_number"]) for d in lines)
            print(f"    {importer} -> {imported} (line {where})")
    if cycles:
        print(f"{len(cycles)} import cycle(s): break each by moving the shared code down a layer.")
        return 1
    print("No import cycles among the application's modules.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
