#!/usr/bin/env python3
"""Fails when a locked dependency of a publishable workspace member (normal and build
dependencies, every feature on; dev-dependencies do not reach users) needs a newer Rust
than the member's `rust-version` in its Cargo.toml says. Reads `cargo metadata` on
stdin."""
import json
import sys

meta = json.load(sys.stdin)
packages = {p["id"]: p for p in meta["packages"]}
nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}


def version(text):
    return tuple(int(x) for x in (text or "0").split("."))


show = lambda v: ".".join(map(str, v))
failed = False
for member in meta["workspace_members"]:
    pkg = packages[member]
    if pkg.get("publish") == []:
        continue  # not published: its users are this workspace's
    ours = version(pkg["rust_version"])
    seen, stack = set(), [member]
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
        ((version(packages[p].get("rust_version")), packages[p]["name"]) for p in seen - {member}),
        reverse=True,
    )
    newer = [(v, n) for v, n in needs if v > ours]
    for v, n in newer:
        print(f"{pkg['name']}: {n} needs Rust {show(v)}, above rust-version {show(ours)}")
        failed = True
    if not newer:
        print(f"{pkg['name']}: rust-version {show(ours)} covers every locked dependency (the newest needs {show(needs[0][0])}: {needs[0][1]})")
sys.exit(1 if failed else 0)
