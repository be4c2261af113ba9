#!/usr/bin/env python3
"""Import cycles between the modules of each crate.

Usage: scripts/module_cycles.py [SRC_DIR ...] (default: every crate's src/ in the workspace).
Reads `crate::` and `super::` paths (comments, doc links and `#[cfg(test)]` modules left out),
builds the import graph at three granularities (top-level modules, two levels, every file) and
prints its strongly connected components. Exits 1 when any crate has a cycle; the test suite
runs it (tests/architecture.rs), and docs/architecture.md says why the rule exists.
"""
import os, re, sys
from collections import defaultdict

def modname(root, path):
    rel = os.path.relpath(path, root)[:-3]
    parts = rel.split(os.sep)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return "::".join(parts) or "crate"

def graph(root, depth):
    mods = {}
    for d, _, fs in os.walk(root):
        for f in fs:
            if f.endswith(".rs"):
                p = os.path.join(d, f)
                mods[modname(root, p)] = p
    def top(m):
        return "::".join(m.split("::")[:depth]) if m != "crate" else m
    g = defaultdict(set)
    for m, p in mods.items():
        src = open(p).read()
        src = re.sub(r"//[^\n]*", "", src)  # comments and doc links are not imports
        src = re.sub(r"#\[cfg\(test\)\]\s*mod \w+\s*\{.*", "", src, flags=re.S)  # skip inline tests
        for ref in re.findall(r"crate::([a-z_][a-z0-9_]*(?:::[a-z_][a-z0-9_]*)*)", src):
            parts = ref.split("::")
            # longest prefix that is a module
            target = None
            for k in range(len(parts), 0, -1):
                cand = "::".join(parts[:k])
                if cand in mods:
                    target = cand; break
            if target and top(target) != top(m) and not top(m).startswith(top(target) + "::") \
               and not top(target).startswith(top(m) + "::"):
                g[top(m)].add(top(target))
        if m != "crate" and "::" in m:
            parent = "::".join(m.split("::")[:-1])
            for ref in re.findall(r"super::([a-z_][a-z0-9_]*)", src):
                t = parent + "::" + ref if parent + "::" + ref in mods else None
                if t and top(t) != top(m):
                    g[top(m)].add(top(t))
    return g

def sccs(g):
    index, low, stack, on, out, i = {}, {}, [], set(), [], [0]
    nodes = set(g) | {t for v in g.values() for t in v}
    def visit(v):
        index[v] = low[v] = i[0]; i[0] += 1; stack.append(v); on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w); low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop(); on.discard(w); comp.append(w)
                if w == v: break
            if len(comp) > 1: out.append(sorted(comp))
    sys.setrecursionlimit(10000)
    for v in sorted(nodes):
        if v not in index: visit(v)
    return out

def main():
    here = os.path.dirname(os.path.abspath(__file__))
    workspace = os.path.dirname(here)
    roots = sys.argv[1:] or [
        os.path.join(workspace, c, "src") for c in ("envs", "agent", "sampler", "trainer", "lab", "")
    ]
    found = False
    for root in roots:
        for depth in (1, 2, 9):
            g = graph(root, depth)
            cyc = sccs(g)
            found |= bool(cyc)
            edges = sum(len(v) for v in g.values())
            name = os.path.relpath(root, workspace)
            print(f"{name} depth {depth}: {edges} import edges, cycles: {cyc if cyc else 'none'}")
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
