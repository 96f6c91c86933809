#!/usr/bin/env bash
# The crate's public surface as docs.rs shows it (all features): one count per page, so
# a type reachable under two paths counts twice; modules; inherent methods of each type
# and the methods of each trait. Run from anywhere:
#
#   bash .ci/public-items.sh          (builds the docs first)
#   bash .ci/public-items.sh DOC_DIR  (counts an already built target/doc/actix_tenancy)
set -euo pipefail
cd "$(dirname "$0")/.."
doc="${1:-}"
if [ -z "$doc" ]; then
  cargo doc --no-deps --all-features -q
  doc="${CARGO_TARGET_DIR:-target}/doc/actix_tenancy"
fi
python3 - "$doc" <<'PY'
import collections, os, re, sys

root = sys.argv[1]
page = re.compile(r"(struct|enum|trait|fn|type|constant|static|macro|union|traitalias|derive|attr)\.(.+)\.html$")
kinds = collections.Counter()
methods = 0
where = collections.defaultdict(list)
for dirpath, _, files in os.walk(root):
    for name in files:
        if not name.endswith(".html"):
            continue
        path = os.path.join(dirpath, name)
        with open(path, encoding="utf-8") as f:
            text = f.read()
        if 'http-equiv="refresh"' in text:  # a redirect, not a page
            continue
        rel = os.path.relpath(path, root)
        if name == "index.html":
            kinds["module"] += 1
            continue
        m = page.match(name)
        if not m:
            continue
        kind, item = m.groups()
        kinds[kind] += 1
        where[item].append(rel)
        if kind in ("struct", "enum", "union"):
            start = text.find('id="implementations-list"')
            if start >= 0:
                ends = [i for i in (text.find(k, start) for k in (
                    'id="trait-implementations', 'id="synthetic-implementations', 'id="deref-methods',
                    'id="blanket-implementations')) if i >= 0]
                end = min(ends) if ends else len(text)
                methods += len(re.findall(r'id="method\.', text[start:end]))
        elif kind == "trait":
            end = min([i for i in (text.find('id="implementors"'), text.find('id="foreign-impls"'),
                                   text.find('id="dyn-compatibility"')) if i >= 0] or [len(text)])
            methods += len(re.findall(r'id="(?:ty)?method\.', text[:end]))
items = sum(v for k, v in kinds.items() if k != "module")
print("pages by kind:", ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())))
print(f"items (every page but modules): {items}")
print(f"methods (inherent, and each trait's own): {methods}")
print(f"public items and methods: {items + methods}")
twice = {k: v for k, v in where.items() if len(v) > 1}
print(f"names on more than one page: {len(twice)}" + (" (" + ", ".join(sorted(twice)) + ")" if twice else ""))
PY
