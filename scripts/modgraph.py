#!/usr/bin/env python3
"""modgraph.py [--check] [REV [REPO]]: the module import graph (of the working tree without REV) of a scanway tree (at a git revision): `use crate::` / `super::` / `scanway::`
lines, comments ignored, folded to top-level module + one level (e.g. compositor, virtio::device).
Prints edges, cycles (strongly connected components), and upward imports against the layer order
cli -> compositor -> scanout -> device model (virtio) -> renderer."""
import re, subprocess, sys, collections
args = [a for a in sys.argv[1:] if a != "--check"]
check = "--check" in sys.argv[1:]
rev = args[0] if args else None  # None: the working tree
repo = args[1] if len(args) > 1 else "."
if rev is None:
    import pathlib
    files = [str(p.relative_to(repo)) for p in pathlib.Path(repo, "src").rglob("*.rs")]
else:
    files = subprocess.run(["git", "-C", repo, "ls-tree", "-r", "--name-only", rev, "src"], capture_output=True, text=True).stdout.split()
files = [f for f in files if f.endswith(".rs")]
def modpath(f):
    p = f[len("src/"):-3].split("/")
    if p[-1] in ("mod", "lib", "main"): p = p[:-1]
    return p
def fold(p):
    # top-level module, or module::child for virtio (the device model is split there)
    if not p: return "lib"
    if p[0] == "virtio" and len(p) > 1: return "virtio::" + p[1]
    return p[0]
def expand(tree):
    """`a::{b, c::{d, e}}` -> [a::b, a::c::d, a::c::e]."""
    i = tree.find("{")
    if i < 0:
        return [tree]
    prefix, body = tree[:i], tree[i + 1:tree.rfind("}")]
    items, depth, cur = [], 0, ""
    for ch in body:
        if ch == "," and depth == 0:
            items.append(cur); cur = ""; continue
        depth += ch == "{"; depth -= ch == "}"; cur += ch
    items.append(cur)
    out = []
    for it in items:
        if it:
            out += [prefix + x for x in expand(it)]
    return out
edges = collections.defaultdict(set)
for f in files:
    if rev is None:
        text = open(f"{repo}/{f}").read()
    else:
        text = subprocess.run(["git", "-C", repo, "show", f"{rev}:{f}"], capture_output=True, text=True).stdout
    text = re.sub(r"//[^\n]*", "", text)
    # an in-file test module (at the end by convention) is not part of the graph
    text = re.split(r"#\[cfg\(test\)\]\s*mod\s+tests\s*\{", text)[0]
    me = modpath(f)
    test = "/tests/" in f or f.endswith("/tests.rs") or "synthetic" in f
    src = fold(me)
    paths = []
    for m in re.finditer(r"\buse\s+([^;]+);", text):
        paths += expand(m.group(1).replace(" ", "").replace("\n", ""))
    paths += [m.group(0) for m in re.finditer(r"\b(?:crate|super|scanway)(?:::\w+)+", text)]
    for path in paths:
        parts = path.split("::")
        kind, rest = parts[0], parts[1:]
        if kind not in ("crate", "super", "scanway"):
            continue
        if kind == "super":
            target = me[:-1] + rest
        else:
            target = rest
        # keep module components only (lowercase)
        comps = [c for c in target if c and c[0].islower()]
        dst = fold(comps) if comps else "lib"
        if dst != src and not test:
            edges[src].add(dst)
# command line, then the compositor, then the protocols it serves (control socket, attach
# socket, run configuration: plain data the command line also uses), scanout, device model,
# renderer
layer = {"main": 0, "lib": 0, "cli": 1, "compositor": 2, "control": 2.5, "attach": 2.5, "run_config": 2.5,
         "scanout": 3, "virtio": 4, "renderer": 6}
def rank(m):
    if m.startswith("virtio::"):
        sub = m.split("::")[1]
        return {"virgl3d": 5, "renderer3d": 4.6, "backing": 4.8, "format": 4.9, "protocol": 4.9, "edid": 4.9, "virgl_stream": 4.9}.get(sub, 4.5)
    return layer.get(m, 9)
print(f"# module graph at {rev or 'the working tree'}")
for s in sorted(edges):
    print(f"{s} -> {', '.join(sorted(edges[s]))}")
# cycles: Tarjan
index, low, stack, on, sccs, n = {}, {}, [], set(), [], [0]
def strong(v):
    index[v] = low[v] = n[0]; n[0] += 1; stack.append(v); on.add(v)
    for w in edges.get(v, ()):
        if w not in index: strong(w); low[v] = min(low[v], low[w])
        elif w in on: low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        c = []
        while True:
            w = stack.pop(); on.discard(w); c.append(w)
            if w == v: break
        if len(c) > 1: sccs.append(sorted(c))
for v in list(edges):
    if v not in index: strong(v)
print("cycles:", sccs or "none")
up = [(s, d) for s in edges for d in edges[s] if rank(d) < rank(s) and not (s.startswith("virtio") and d.startswith("virtio"))]
print("upward imports:", sorted(up) or "none")
if check and (sccs or up):
    sys.exit("module graph: cycles or upward imports (see above)")
