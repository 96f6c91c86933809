#!/usr/bin/env bash
# Throughput and latency of each bench_server mode, against bare actix in the same run.
#
#   bench/load.sh [MODE...]        (default: every mode)
#   ROUNDS=5 DURATION=5 CONNECTIONS=32 bench/load.sh
#
# The server (one worker) is pinned to CPU 1 and wrk to CPU 0; rounds are interleaved
# (every mode once per round) so that drift in the machine's speed hits every mode
# alike; the table reports medians over the rounds and their ratio to bare actix.
# Absolute numbers on a shared 2-core machine swing 10-20% between runs: read the
# ratios, and bench/callgrind.sh for a measure that repeats to about 1%.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-5}
CONNECTIONS=${CONNECTIONS:-32}
PORT=${PORT:-18097}
ADDR=127.0.0.1:$PORT
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release --features jwt --example bench_server -q
BIN=${CARGO_TARGET_DIR:-target}/release/examples/bench_server # bench/bench_server.rs
MODES=("$@")
[ ${#MODES[@]} -gt 0 ] || MODES=(bare resolve cached policy full full-headers full-jwt peer floor)
rest=(); for m in "${MODES[@]}"; do [ "$m" = bare ] || rest+=("$m"); done
MODES=(bare "${rest[@]}") # the baseline, measured first
OUT=$(mktemp -d)
TOKEN=$("$BIN" token t42) # for full-jwt; the other modes ignore it
trap 'rm -rf "$OUT"' EXIT

# wrk reports latency as e.g. 312.00us, 1.20ms, 2.00s: print microseconds.
to_us() { awk '{ v=$1; if (v ~ /us$/) { sub(/us$/,"",v); print v } else if (v ~ /ms$/) { sub(/ms$/,"",v); print v*1000 } else if (v ~ /s$/) { sub(/s$/,"",v); print v*1000000 } else print v }'; }

run_one() { # mode round
  local mode=$1 round=$2
  taskset -c 1 "$BIN" serve "$mode" "$ADDR" 2>/dev/null &
  local pid=$!
  for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.05; done
  local auth=(); [ "$mode" != full-jwt ] || auth=(-H "Authorization: Bearer $TOKEN")
  taskset -c 0 wrk -t1 -c"$CONNECTIONS" -d1s -H 'X-Tenant-ID: t42' "${auth[@]}" "http://$ADDR/hello" >/dev/null # warm-up
  taskset -c 0 wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency -H 'X-Tenant-ID: t42' "${auth[@]}" \
    "http://$ADDR/hello" > "$OUT/$mode.$round.txt"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  if grep -q "Non-2xx" "$OUT/$mode.$round.txt"; then echo "mode $mode answered non-2xx" >&2; exit 1; fi
  if grep -q "Socket errors" "$OUT/$mode.$round.txt"; then
    echo "mode $mode: wrk saw socket errors (a crash or timeouts); its figures would mislead" >&2
    grep "Socket errors" "$OUT/$mode.$round.txt" >&2; exit 1
  fi
}

for round in $(seq 1 "$ROUNDS"); do
  for mode in "${MODES[@]}"; do run_one "$mode" "$round"; done
done

median() { sort -g | awk '{ a[NR]=$1 } END { if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2 }'; }
stat() { # mode field
  for round in $(seq 1 "$ROUNDS"); do
    case $2 in
      rps) awk '/^Requests\/sec:/ {print $2}' "$OUT/$1.$round.txt" ;;
      p50|p90|p99) awk -v p="${2#p}%" '$1==p {print $2}' "$OUT/$1.$round.txt" | to_us ;;
    esac
  done | median
}

echo "machine: $(nproc) cores, $(awk '/model name/ {$1=$2=$3=""; print; exit}' /proc/cpuinfo | xargs); rounds=$ROUNDS duration=${DURATION}s connections=$CONNECTIONS"
printf '| mode | requests/s | ratio to bare | p50 µs | p90 µs | p99 µs |\n| --- | ---: | ---: | ---: | ---: | ---: |\n'
bare_rps=$(stat "${MODES[0]}" rps)
for mode in "${MODES[@]}"; do
  rps=$(stat "$mode" rps)
  printf '| %s | %.0f | %.3f | %.0f | %.0f | %.0f |\n' "$mode" "$rps" \
    "$(awk -v a="$rps" -v b="$bare_rps" 'BEGIN{print a/b}')" \
    "$(stat "$mode" p50)" "$(stat "$mode" p90)" "$(stat "$mode" p99)"
done
