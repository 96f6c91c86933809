#!/usr/bin/env python3
"""Fails when a locked dependency of the library (normal and build dependencies, every
feature on; dev-dependencies do not reach users) needs a newer Rust than the
`rust-version` in Cargo.toml says. Reads `cargo metadata` on stdin."""
import json
import sys

meta = json.load(sys.stdin)
packages = {p["id"]: p for p in meta["packages"]}
nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
root = meta["resolve"]["root"]


def version(text):
    return tuple(int(x) for x in (text or "0").split("."))


ours = version(packages[root]["rust_version"])
seen, stack = set(), [root]
while stack:
    node = stack.pop()
    if node in seen:
        continue
    seen.add(node)
    for dep in nodes[node]["deps"]:
        kinds = {k["kind"] for k in dep["dep_kinds"]}
        if kinds != {"dev"}:
            stack.append(dep["pkg"])

needs = sorted(
    ((version(packages[p].get("rust_version")), packages[p]["name"]) for p in seen - {root}),
    reverse=True,
)
newer = [(v, n) for v, n in needs if v > ours]
show = lambda v: ".".join(map(str, v))
if newer:
    for v, n in newer:
        print(f"{n} needs Rust {show(v)}, above rust-version {show(ours)}")
    sys.exit(1)
print(f"rust-version {show(ours)} covers every locked dependency (the newest needs {show(needs[0][0])}: {needs[0][1]})")
