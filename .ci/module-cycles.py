#!/usr/bin/env python3
"""Fails when the top-level modules of host/src depend on one another in a cycle.

A module is a file or folder directly under host/src; an edge A -> B is any `crate::B` path,
in a `use` line or inline, anywhere in A's files (unit tests too: they keep the layering as
well). Prints the edges of each cycle and exits 1; `-v` prints the whole graph first.
"""
import re
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "host" / "src"
ROOTS = {"lib.rs", "main.rs"}


def module_of(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".rs")


def strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(line.split("//", 1)[0] for line in text.splitlines())


def edges() -> dict[str, set[str]]:
    modules = {module_of(p) for p in SRC.rglob("*.rs") if p.name not in ROOTS or p.parent != SRC}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for path in SRC.rglob("*.rs"):
        if path.parent == SRC and path.name in ROOTS:
            continue
        here = module_of(path)
        code = strip_comments(path.read_text())
        # `crate::x`, and `crate::{x, y::z}` groups.
        for m in re.finditer(r"\bcrate::(\{[^}]*\}|\w+)", code):
            target = m.group(1)
            names = re.findall(r"(?:^|[{,\s])(\w+)", target.strip("{}")) if target.startswith("{") else [target]
            for name in names:
                if name in modules and name != here:
                    graph[here].add(name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
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
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def main() -> int:
    graph = edges()
    bad = cycles(graph)
    if "-v" in sys.argv:
        for m in sorted(graph):
            print(f"{m} -> {', '.join(sorted(graph[m])) or '-'}")
    if not bad:
        print(f"module-cycles: {len(graph)} modules of host/src, no cycle")
        return 0
    for comp in bad:
        members = set(comp)
        print("module-cycles: these modules of host/src import one another in a cycle:")
        for m in comp:
            for t in sorted(graph[m] & members):
                print(f"  {m} -> {t}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
