"""The package's import graph against its floors: cycles, imports that run back up, unplaced modules.

kardia is laid out in floors (foundation < judge, safety < data, rewards < train < eval < applications); a
module may import from its own floor or below. Function-level imports count too: they hide a dependency, they do
not remove it. Run `python scripts/import_graph.py [SRC]`; exits 1 when anything is out of place.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

FLOORS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("config", "paths", "records", "jobs", "corpora", "dataset", "emotions", "spans", "prompts", "llm")),
    ("judge+safety", ("judge", "safety")),
    ("data+rewards", ("data", "rewards")),
    ("train", ("train",)),
    ("eval", ("eval",)),
    ("applications", ("chat", "serve", "guarded", "demo", "reproduce", "stages", "cli", "swift_plugin", "testing")),
]
ROOT = "kardia"


def modules(src: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package under `src`."""
    out = {}
    for f in sorted((src / ROOT).rglob("*.py")):
        parts = list(f.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def edges(src: Path) -> set[tuple[str, str]]:
    """(importer, imported) for every import of a kardia module, at any depth of the file."""
    mods = modules(src)
    found: set[tuple[str, str]] = set()
    for name, f in mods.items():
        is_pkg = f.name == "__init__.py"
        package = name if is_pkg else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"), str(f))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - (node.level - 1)]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in mods else mod for a in node.names]
            for t in targets:
                while t and t not in mods:  # `import kardia.llm.local as x` -> the module itself; attributes -> parent
                    t = t.rpartition(".")[0]
                if t and t.startswith(ROOT) and t != name:
                    found.add((name, t))
    return found


def floor(module: str) -> int | None:
    parts = module.split(".")
    if len(parts) < 2:
        return None
    head = parts[1]
    for i, (_, names) in enumerate(FLOORS):
        if any(head == p or head.startswith(p + "_") for p in names):
            return i
    return None


def _family(a: str, b: str) -> bool:
    """A package and its own submodules re-export each other: not a design cycle."""
    return a.startswith(b + ".") or b.startswith(a + ".")


def cycles(found: set[tuple[str, str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), package re-exports left out."""
    graph: dict[str, list[str]] = {}
    for a, b in found:
        if not _family(a, b):
            graph.setdefault(a, []).append(b)
            graph.setdefault(b, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def upward(found: set[tuple[str, str]]) -> list[tuple[str, str]]:
    """Imports from a lower floor into a higher one."""
    return sorted((a, b) for a, b in found
                  if floor(a) is not None and floor(b) is not None and floor(b) > floor(a))  # type: ignore[operator]


def unplaced(src: Path) -> list[str]:
    return sorted(m for m in modules(src) if m != ROOT and floor(m) is None)


def main(argv: list[str]) -> int:
    src = Path(argv[0]) if argv else Path(__file__).resolve().parents[1] / "src"
    found = edges(src)
    cyc, up, lost = cycles(found), upward(found), unplaced(src)
    print(f"{len(modules(src))} modules, {len(found)} import edges, {len(cyc)} cycles, {len(up)} upward imports, "
          f"{len(lost)} unplaced")
    for c in cyc:
        print("cycle: " + " <-> ".join(c))
    for a, b in up:
        print(f"upward: {a} ({FLOORS[floor(a)][0]}) imports {b} ({FLOORS[floor(b)][0]})")  # type: ignore[index]
    for m in lost:
        print(f"unplaced: {m}")
    return 1 if cyc or up or lost else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
