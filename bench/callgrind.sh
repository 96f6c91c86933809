#!/usr/bin/env bash
# Instructions per request for each bench_server mode, under valgrind's callgrind.
#
#   bench/callgrind.sh [MODE...]      (default: every mode the server knows)
#
# The server runs under callgrind with one worker; a client sends N1 requests over one
# keep-alive connection, the server is stopped, and the run is repeated with N2. The
# difference (Ir(N2) - Ir(N1)) / (N2 - N1) removes start-up and shutdown, and repeats
# to within about 1% whatever else the machine does.
set -euo pipefail
cd "$(dirname "$0")/.."
N1=${N1:-2000}
N2=${N2:-12000}
PORT=${PORT:-18099}
ADDR=127.0.0.1:$PORT
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind >/dev/null; }
cargo build --release --features jwt --example bench_server -q
BIN=${CARGO_TARGET_DIR:-target}/release/examples/bench_server # bench/bench_server.rs
MODES=("$@")
[ ${#MODES[@]} -gt 0 ] || MODES=(bare bare-headers resolve cached policy full full-headers full-jwt peer floor)
rest=(); for m in "${MODES[@]}"; do [ "$m" = bare ] || rest+=("$m"); done
MODES=(bare "${rest[@]}") # the baseline, measured first
OUT=$(mktemp -d)
TOKEN=$("$BIN" token t42) # for full-jwt; the other modes ignore it
trap 'rm -rf "$OUT"' EXIT

ir_for() { # mode n -> total Ir of one server run serving n requests
  local mode=$1 n=$2 file="$OUT/cg.$1.$2"
  valgrind --tool=callgrind --callgrind-out-file="$file" "$BIN" serve "$mode" "$ADDR" 2>"$OUT/vg.log" &
  local pid=$!
  for _ in $(seq 1 200); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
  local ok=1 token=(); [ "$mode" != full-jwt ] || token=("$TOKEN")
  "$BIN" client "$ADDR" "$n" t42 "${token[@]}" || ok=0
  kill -INT "$pid"; wait "$pid" || true
  # Called in $(...), where `set -e` does not apply: a failed client must fail here.
  [ "$ok" = 1 ] || { echo "mode $mode: the client failed; no figure" >&2; return 1; }
  local ir; ir=$(grep -E '^(summary|totals):' "$file" | head -n1 | awk '{print $2}')
  [ -n "$ir" ] || { echo "mode $mode: no callgrind total" >&2; return 1; }
  echo "$ir"
}

printf '| mode | Ir/request | ratio to bare |\n| --- | ---: | ---: |\n'
bare=""
for mode in "${MODES[@]}"; do
  a=$(ir_for "$mode" "$N1") || exit 1
  b=$(ir_for "$mode" "$N2") || exit 1
  per=$(( (b - a) / (N2 - N1) ))
  [ -n "$bare" ] || { [ "$mode" = bare ] && bare=$per; }
  if [ -n "$bare" ]; then ratio=$(awk -v p="$per" -v b="$bare" 'BEGIN{printf "%.3f", p/b}'); else ratio="-"; fi
  printf '| %s | %d | %s |\n' "$mode" "$per" "$ratio"
done
