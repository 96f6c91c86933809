#!/usr/bin/env bash
# RedisQuota checks per second at concurrency 1, 8 and 32, beside redis-benchmark
# sending the same EVALSHA (the crate's own script, key and arguments) in the same
# run, against REDIS_URL (default redis://127.0.0.1:6379) and, when
# REDIS_CLUSTER_URLS is set (comma-separated nodes), against that Redis Cluster too:
# there redis-benchmark sends the script to the master that owns its key, one shard,
# while the crate's checks spread their tenants over every shard.
#
#   bench/redis.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
URL=${REDIS_URL:-redis://127.0.0.1:6379}
SECS=${1:-5}
command -v redis-benchmark >/dev/null || { echo "redis-benchmark is needed" >&2; exit 1; }
cargo build --release --features redis-cluster --example redis_quota_bench -q
BIN=${CARGO_TARGET_DIR:-target}/release/examples/redis_quota_bench # bench/redis_quota_bench.rs
OUT=$(mktemp -d); trap 'rm -rf "$OUT"' EXIT

hostport() { local hp=${1#redis://}; hp=${hp%%/*}; echo "${hp%%:*} ${hp##*:}"; }

# table NAME URL HOST PORT: the crate's checks on URL, redis-benchmark on HOST:PORT.
table() {
  local name=$1 url=$2 host=$3 port=$4 sha c ours n theirs
  "$BIN" "$url" invocation "$OUT"
  sha=$(redis-cli -h "$host" -p "$port" -x SCRIPT LOAD < "$OUT/check.lua")
  mapfile -t ARGV < "$OUT/args"
  echo
  echo "$name"
  echo
  echo "| concurrency | RedisQuota checks/s | redis-benchmark EVALSHA/s | ratio |"
  echo "| ---: | ---: | ---: | ---: |"
  for c in 1 8 32; do
    ours=$("$BIN" "$url" run "$c" "$SECS" | sed -E 's/.*checks\/s=//')
    n=$(awk -v r="$ours" -v s="$SECS" 'BEGIN{n=int(r*s); if (n<10000) n=10000; print n}')
    theirs=$(redis-benchmark -h "$host" -p "$port" -c "$c" -n "$n" -q EVALSHA "$sha" 1 "${ARGV[@]}" |
      tr '\r' '\n' | grep -Eo '[0-9.]+ requests per second' | tail -n1 | awk '{print $1}')
    printf '| %s | %s | %s | %s |\n' "$c" "$ours" "$theirs" \
      "$(awk -v a="$ours" -v b="$theirs" 'BEGIN{printf "%.2f", a/b}')"
  done
}

read -r HOST PORT < <(hostport "$URL")
table "single node ($HOST:$PORT)" "$URL" "$HOST" "$PORT"

if [ -n "${REDIS_CLUSTER_URLS:-}" ]; then
  # The master that owns the benchmark key's slot.
  "$BIN" "$REDIS_CLUSTER_URLS" invocation "$OUT"
  KEY=$(head -n1 "$OUT/args")
  read -r H0 P0 < <(hostport "${REDIS_CLUSTER_URLS%%,*}")
  SLOT=$(redis-cli -h "$H0" -p "$P0" CLUSTER KEYSLOT "$KEY")
  OWNER=$(redis-cli -h "$H0" -p "$P0" CLUSTER SHARDS >/dev/null 2>&1; \
    redis-cli -h "$H0" -p "$P0" CLUSTER NODES | awk -v s="$SLOT" '
      $3 ~ /master/ { for (i = 9; i <= NF; i++) { split($i, r, "-"); if (r[2] == "") r[2] = r[1];
        if (s >= r[1] && s <= r[2]) { split($2, a, "@"); print a[1]; exit } } }')
  table "Redis Cluster, 3 masters (redis-benchmark on the key's master, $OWNER)" \
    "$REDIS_CLUSTER_URLS" "${OWNER%%:*}" "${OWNER##*:}"
fi
