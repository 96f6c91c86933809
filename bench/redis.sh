#!/usr/bin/env bash
# RedisQuota checks per second at concurrency 1, 8 and 32, beside redis-benchmark
# sending the same EVALSHA (the crate's own script, key and arguments) in the same
# run, against REDIS_URL (default redis://127.0.0.1:6379).
#
#   bench/redis.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
URL=${REDIS_URL:-redis://127.0.0.1:6379}
SECS=${1:-5}
HOSTPORT=${URL#redis://}; HOSTPORT=${HOSTPORT%%/*}; HOST=${HOSTPORT%%:*}; PORT=${HOSTPORT##*:}
command -v redis-benchmark >/dev/null || { echo "redis-benchmark is needed" >&2; exit 1; }
cargo build --release --features redis --example redis_quota_bench -q
BIN=target/release/examples/redis_quota_bench
OUT=$(mktemp -d); trap 'rm -rf "$OUT"' EXIT
"$BIN" "$URL" invocation "$OUT"
SHA=$(redis-cli -h "$HOST" -p "$PORT" -x SCRIPT LOAD < "$OUT/check.lua")
mapfile -t ARGV < "$OUT/args"
echo "| concurrency | RedisQuota checks/s | redis-benchmark EVALSHA/s | ratio |"
echo "| ---: | ---: | ---: | ---: |"
for c in 1 8 32; do
  ours=$("$BIN" "$URL" run "$c" "$SECS" | sed -E 's/.*checks\/s=//')
  n=$(awk -v r="$ours" -v s="$SECS" 'BEGIN{n=int(r*s); if (n<10000) n=10000; print n}')
  theirs=$(redis-benchmark -h "$HOST" -p "$PORT" -c "$c" -n "$n" -q EVALSHA "$SHA" 1 "${ARGV[@]}" |
    tr '\r' '\n' | grep -Eo '[0-9.]+ requests per second' | tail -n1 | awk '{print $1}')
  printf '| %s | %s | %s | %s |\n' "$c" "$ours" "$theirs" \
    "$(awk -v a="$ours" -v b="$theirs" 'BEGIN{printf "%.2f", a/b}')"
done
