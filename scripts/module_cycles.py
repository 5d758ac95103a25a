#!/usr/bin/env python3
"""Import cycles between the top-level modules of a crate's src/ (a module is src/NAME.rs
plus everything under src/NAME/).

An edge A -> B is any `crate::B` path in A's files outside comments (`use` lines and inline
paths alike, `use crate::{b, c}` included). Prints every cycle (strongly connected set of
modules) with one file and line per edge, and exits 1 when there is one. `--only a,b,c` looks
at those modules only.

    scripts/module_cycles.py [--src src] [--only check,cli,report,rules,verdict]
"""

import argparse
import re
import sys
from pathlib import Path

PATH = re.compile(r"\bcrate::(\{[^}]*\}|\w+)")


def module_of(src: Path, file: Path) -> str:
    first = file.relative_to(src).parts[0]
    return first[:-3] if first.endswith(".rs") else first


def strip_comments(line: str) -> str:
    # `//` inside a string is rare in these lines; a doc link is a comment too.
    return line.split("//", 1)[0]


def edges(src: Path):
    """(from, to) -> first (file, line number) that makes it."""
    found = {}
    modules = {module_of(src, f) for f in src.rglob("*.rs")}
    for file in sorted(src.rglob("*.rs")):
        here = module_of(src, file)
        for no, line in enumerate(file.read_text().splitlines(), 1):
            for m in PATH.finditer(strip_comments(line)):
                group = m.group(1)
                names = re.findall(r"(?:^|[{,]\s*)(\w+)", group) if group.startswith("{") else [group]
                for name in names:
                    if name in modules and name != here:
                        found.setdefault((here, name), (file, no))
    return found


def cycles(nodes, graph):
    """Tarjan's strongly connected components with more than one node."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
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

    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", default="src")
    ap.add_argument("--only", default="", help="comma-separated modules to look at")
    args = ap.parse_args()
    src = Path(args.src)
    if not src.is_dir():
        print(f"module_cycles: no folder {src}", file=sys.stderr)
        return 2
    only = {m for m in args.only.split(",") if m}
    found = {
        (a, b): where
        for (a, b), where in edges(src).items()
        if not only or (a in only and b in only)
    }
    graph = {}
    for a, b in found:
        graph.setdefault(a, set()).add(b)
    nodes = {n for e in found for n in e}
    bad = cycles(nodes, graph)
    for comp in bad:
        print("cycle: " + ", ".join(comp))
        for (a, b), (file, no) in sorted(found.items()):
            if a in comp and b in comp:
                print(f"  {a} -> {b}  ({file}:{no})")
    if not bad:
        scope = ", ".join(sorted(only)) if only else "every module"
        print(f"no import cycle among {scope} ({len(found)} edges)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
