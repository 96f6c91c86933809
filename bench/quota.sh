#!/usr/bin/env bash
# One quota check: LocalQuota (a rate and a daily budget; a rate only) beside governor's
# keyed RateLimiter::dashmap, on the same tenants and the same random access pattern,
# in one run.
#
#   bench/quota.sh [TENANTS...]        (default: 1 1000 100000 1000000)
#
# Instructions per check under callgrind: each engine runs twice, with N1 and N2
# checks after the same setup, and (Ir(N2) - Ir(N1)) / (N2 - N1) leaves the checks
# alone; the `none` engine (the access pattern only) is subtracted. ns/check is
# measured natively beside it (noisy on a shared machine: read the ratios).
set -euo pipefail
cd "$(dirname "$0")/.."
N1=${N1:-20000}
N2=${N2:-120000}
NATIVE=${NATIVE:-3000000}
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind >/dev/null; }
cargo build --release --example quota_engine -q
BIN=${CARGO_TARGET_DIR:-target}/release/examples/quota_engine # bench/quota_engine.rs
SIZES=("$@")
[ ${#SIZES[@]} -gt 0 ] || SIZES=(1 1000 100000 1000000)
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

ir() { # engine tenants checks -> total Ir
  local file="$OUT/cg.$1.$2.$3"
  valgrind --tool=callgrind --callgrind-out-file="$file" "$BIN" "$1" "$2" "$3" >/dev/null 2>"$OUT/vg.log" ||
    { cat "$OUT/vg.log" >&2; return 1; }
  grep -E '^(summary|totals):' "$file" | head -n1 | awk '{print $2}'
}
per_check() { # engine tenants -> Ir per check
  local a b; a=$(ir "$1" "$2" "$N1"); b=$(ir "$1" "$2" "$N2")
  echo $(( (b - a) / (N2 - N1) ))
}
ns() { "$BIN" "$1" "$2" "$NATIVE" | sed -E 's/.*ns\/check=//'; }

echo "| tenants | engine | Ir/check | vs governor | ns/check | vs governor |"
echo "| ---: | --- | ---: | ---: | ---: | ---: |"
for n in "${SIZES[@]}"; do
  base=$(per_check none "$n")
  g=$(( $(per_check governor "$n") - base )); gns=$(ns governor "$n")
  for e in governor local-rate local-budget; do
    if [ "$e" = governor ]; then i=$g; t=$gns; else i=$(( $(per_check "$e" "$n") - base )); t=$(ns "$e" "$n"); fi
    printf '| %s | %s | %s | %s | %s | %s |\n' "$n" "$e" "$i" \
      "$(awk -v a="$i" -v b="$g" 'BEGIN{printf "%.2f", a/b}')" "$t" \
      "$(awk -v a="$t" -v b="$gns" 'BEGIN{printf "%.2f", a/b}')"
  done
done
