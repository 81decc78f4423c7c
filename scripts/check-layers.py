#!/usr/bin/env python3
"""Checks the library's layering (run in CI by scripts/test.sh).

Reads every `crate::a::b` and `super::x` path in crates/speechvault/src (test modules left
out) and fails when
  1. modules that share a parent import each other in a cycle (at every depth), or
  2. a layer imports from a layer below it: support and error import only each other; the
     adapters (objstore, pg, repository, tls, observe) nothing of model or ops; model
     nothing of ops.
Prints each offending path with the file and line that makes it.
"""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "speechvault", "src")
LAYER = {"support": 0, "error": 0, "kinds": 4, "objstore": 1, "pg": 1, "repository": 1, "tls": 1, "observe": 1,
         "model": 2, "ops": 3}


def module_path(rel):
    parts = rel[:-3].split("/")
    if parts[-1] in ("mod", "lib"):
        parts = parts[:-1]
    return parts


def modules():
    found = {}
    for dp, _, files in os.walk(ROOT):
        for f in files:
            if not f.endswith(".rs") or f.endswith("_tests.rs"):
                continue
            rel = os.path.relpath(os.path.join(dp, f), ROOT)
            found[tuple(module_path(rel))] = os.path.join(dp, f)
    return found


def strip_tests(text):
    # Test modules stand at the end of a file, after `#[cfg(test)]`.
    i = text.find("#[cfg(test)]")
    return text if i < 0 else text[:i]


def references(path, mod, known):
    text = strip_tests(open(path, encoding="utf-8").read())
    for n, line in enumerate(text.split("\n"), 1):
        # Comments (doc links included) are not imports.
        code = line.split("//")[0]
        for m in re.finditer(r"\bcrate::((?:[a-z_][a-z0-9_]*::)*[a-z_][a-z0-9_]*)", code):
            yield n, tuple(m.group(1).split("::"))
        for m in re.finditer(r"\bcrate::\{([^}]*)\}", code):
            for name in re.findall(r"(?:^|,)\s*([a-z_][a-z0-9_]*)", m.group(1)):
                yield n, (name,)
        for m in re.finditer(r"(?<![:\w])super::([a-z_][a-z0-9_]*)", code):
            parent = mod[:-1]
            yield n, parent + (m.group(1),)


def main():
    known = modules()
    prefixes = {p[:i] for p in known for i in range(1, len(p) + 1)}
    edges = {}  # (parent, a, b) -> [where]
    problems = []
    for mod, path in known.items():
        if not mod:
            continue
        for line, ref in references(path, mod, known):
            # Keep the part of the path that names modules.
            k = 0
            while k < len(ref) and ref[: k + 1] in prefixes:
                k += 1
            target = ref[:k]
            if not target:
                continue
            where = f"{os.path.relpath(path, os.path.join(ROOT, '..', '..', '..'))}:{line}"
            a, b = LAYER.get(mod[0]), LAYER.get(target[0])
            if a is not None and b is not None and b > a and not (a == 0 and b == 0):
                problems.append(f"layer: {'::'.join(mod)} (layer {a}) imports {'::'.join(target)} (layer {b}) at {where}")
            common = 0
            while common < min(len(mod), len(target)) and mod[common] == target[common]:
                common += 1
            if common < len(mod) and common < len(target):
                key = (mod[:common], mod[common], target[common])
                edges.setdefault(key, []).append(where)
    graph = {}
    for (parent, a, b) in edges:
        graph.setdefault(parent, {}).setdefault(a, set()).add(b)
    for parent, g in graph.items():
        for cycle in cycles(g):
            name = "::".join(parent) or "crate"
            problems.append(f"cycle among the modules of {name}: {' -> '.join(cycle + [cycle[0]])}")
            for a, b in zip(cycle, cycle[1:] + [cycle[0]]):
                problems.append(f"    {a} -> {b} at {edges[(parent, a, b)][0]}")
    if problems:
        print("\n".join(problems))
        print(f"{len([p for p in problems if not p.startswith('    ')])} layering problem(s)")
        return 1
    print(f"layers: {len(known)} modules, no import cycle, no layer imports from below")
    return 0


def cycles(g):
    """Strongly connected components with more than one module, each as one cycle through it."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
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
                out.append(path_through(g, set(comp)))

    for v in list(g):
        if v not in index:
            visit(v)
    return out


def path_through(g, comp):
    start = min(comp)
    # Breadth-first from start back to start inside the component.
    prev, queue, seen = {}, [start], {start}
    while queue:
        v = queue.pop(0)
        for w in sorted(g.get(v, ())):
            if w not in comp:
                continue
            if w == start:
                path = [v]
                while path[-1] != start:
                    path.append(prev[path[-1]])
                return list(reversed(path))
            if w not in seen:
                seen.add(w)
                prev[w] = v
                queue.append(w)
    return sorted(comp)


if __name__ == "__main__":
    sys.exit(main())
