#!/usr/bin/env bash
# Instructions per request for each bench_server mode, under valgrind's callgrind.
#
#   bench/callgrind.sh [MODE...]      (default: every mode the servers know)
#
# Modes named `axum-*` run the axum server of bench/tower (bare axum, tower-governor,
# tower-tenancy's layer); the others, actix's bench/bench_server.rs. Each family's
# ratio is to its own bare server (`bare`, `axum-bare`), measured first in the run.
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
[ ${#MODES[@]} -gt 0 ] || MODES=(bare bare-headers resolve cached policy full full-headers full-jwt peer floor
  axum-bare axum-governor axum-resolve axum-cached axum-full)
AXUM_BIN=${CARGO_TARGET_DIR:-target}/release/bench_axum # bench/tower
axum=0; for m in "${MODES[@]}"; do case "$m" in axum-*) axum=1 ;; esac; done
[ "$axum" = 0 ] || cargo build --release -p tenancy-bench-tower -q
# Each family's baseline, measured first.
rest=(); for m in "${MODES[@]}"; do case "$m" in bare | axum-bare) ;; *) rest+=("$m") ;; esac; done
base=(bare); [ "$axum" = 0 ] || base+=(axum-bare)
MODES=("${base[@]}" "${rest[@]}")
OUT=$(mktemp -d)
TOKEN=$("$BIN" token t42) # for full-jwt; the other modes ignore it
trap 'rm -rf "$OUT"' EXIT

ir_for() { # mode n -> total Ir of one server run serving n requests
  local mode=$1 n=$2 file="$OUT/cg.$1.$2"
  local server=("$BIN" serve "$mode" "$ADDR")
  case "$mode" in axum-*) server=("$AXUM_BIN" "$mode" "$ADDR") ;; esac
  valgrind --tool=callgrind --callgrind-out-file="$file" "${server[@]}" 2>"$OUT/vg.log" &
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

printf '| mode | Ir/request | ratio to its bare server |\n| --- | ---: | ---: |\n'
bare=""; axum_bare=""
for mode in "${MODES[@]}"; do
  a=$(ir_for "$mode" "$N1") || exit 1
  b=$(ir_for "$mode" "$N2") || exit 1
  per=$(( (b - a) / (N2 - N1) ))
  case "$mode" in bare) bare=$per ;; axum-bare) axum_bare=$per ;; esac
  case "$mode" in axum-*) ref=$axum_bare ;; *) ref=$bare ;; esac
  ratio=$(awk -v p="$per" -v b="$ref" 'BEGIN{printf "%.3f", p/b}')
  printf '| %s | %d | %s |\n' "$mode" "$per" "$ratio"
done
