#!/usr/bin/env bash
# A Redis Cluster of three masters (no replicas) on loopback, for the tests.
#
#   .ci/redis-cluster.sh start DIR   starts it, its files in DIR; prints one line on
#                                    stdout, the node URLs comma-separated:
#                                    redis://127.0.0.1:7100,redis://127.0.0.1:7101,...
#   .ci/redis-cluster.sh stop DIR    stops the servers started in DIR (by the PIDs in
#                                    DIR's pidfiles, nothing else) and removes DIR's files
#
# Ports: the first free ones from REDIS_CLUSTER_BASE_PORT (7100) on, each with its
# cluster bus port (port + 10000) free too. Everything but the URL line goes to stderr.
# A step that fails (no redis-server or redis-cli, a server that does not start, a
# cluster that is not ok within REDIS_CLUSTER_WAIT seconds, 30) exits non-zero, with
# what it started stopped again.
set -euo pipefail

MASTERS=3
BASE_PORT="${REDIS_CLUSTER_BASE_PORT:-7100}"
WAIT_SECS="${REDIS_CLUSTER_WAIT:-30}"

say() { printf 'redis-cluster: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

usage() {
  echo "usage: $0 start DIR | stop DIR" >&2
  exit 2
}

# True when something uses TCP port $1 on this machine: a listener or a connection
# (one in TIME-WAIT does not count: redis-server binds with SO_REUSEADDR).
port_in_use() {
  local p=$1
  if command -v ss >/dev/null; then
    [ -n "$(ss -Htan exclude time-wait "( sport = :$p )" 2>/dev/null)" ] && return 0
  fi
  (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null
}

# The command line of process $1 ("" when there is none).
proc_args() { tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null || true; }

# True when PID $1 is a redis-server serving port $2 (not a PID reused by another process).
is_our_server() {
  local args
  args="$(proc_args "$1")"
  case "$args" in *redis-server*":$2 "* | *redis-server*"--port $2 "*) return 0 ;; *) return 1 ;; esac
}

show_logs() {
  local f
  for f in "$1"/redis-*.log; do
    [ -f "$f" ] || continue
    say "--- last lines of $f"
    tail -n 15 "$f" >&2 || true
  done
}

stop_cluster() {
  local dir=$1 pidfile port pid i
  [ -d "$dir" ] || { say "$dir does not exist: nothing to stop"; return 0; }
  for pidfile in "$dir"/redis-*.pid; do
    [ -f "$pidfile" ] || continue
    port="${pidfile##*/redis-}"
    port="${port%.pid}"
    pid="$(tr -dc '0-9' <"$pidfile")"
    if [ -n "$pid" ] && is_our_server "$pid" "$port"; then
      kill -TERM "$pid" 2>/dev/null || true
      for i in $(seq 1 50); do
        is_our_server "$pid" "$port" || break
        sleep 0.1
      done
      if is_our_server "$pid" "$port"; then
        say "redis-server $pid (port $port) ignores SIGTERM: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
      fi
      say "stopped redis-server $pid on port $port"
    fi
    rm -f "$pidfile"
  done
  rm -f "$dir"/nodes-*.conf "$dir"/redis-*.log "$dir"/redis-*.pid "$dir/ports" \
    "$dir"/dump.rdb "$dir"/temp-*.rdb
  rmdir "$dir" 2>/dev/null || true
}

start_cluster() {
  local dir=$1
  command -v redis-server >/dev/null || die "redis-server not found (apt-get install redis-server)"
  command -v redis-cli >/dev/null || die "redis-cli not found (apt-get install redis-tools)"
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  if compgen -G "$dir/redis-*.pid" >/dev/null || compgen -G "$dir/nodes-*.conf" >/dev/null; then
    die "$dir already holds a cluster's files: '$0 stop $dir' first"
  fi

  # Free ports, each with a free bus port.
  local ports=() p=$BASE_PORT
  while [ "${#ports[@]}" -lt "$MASTERS" ]; do
    [ $((p + 10000)) -le 65535 ] || die "no free ports from $BASE_PORT on"
    if ! port_in_use "$p" && ! port_in_use $((p + 10000)); then ports+=("$p"); fi
    p=$((p + 1))
  done
  printf '%s\n' "${ports[@]}" >"$dir/ports"

  # From here on, a failure stops what was started.
  DIR=$dir
  set -E
  trap 'fail "unexpected failure at line $LINENO"' ERR

  local t0=$SECONDS
  for p in "${ports[@]}"; do
    redis-server --port "$p" --cluster-enabled yes --cluster-config-file "$dir/nodes-$p.conf" \
      --cluster-node-timeout 2000 --save "" --appendonly no --bind 127.0.0.1 \
      --daemonize yes --pidfile "$dir/redis-$p.pid" --dir "$dir" --logfile "$dir/redis-$p.log" >&2 \
      || fail "redis-server on port $p does not start"
  done
  # Each server up, and the one on its port ours (the PID in its pidfile).
  local pid ok
  for p in "${ports[@]}"; do
    ok=0
    for _ in $(seq 1 100); do
      pid="$(tr -dc '0-9' <"$dir/redis-$p.pid" 2>/dev/null || true)"
      if [ -n "$pid" ] && redis-cli -p "$p" info server 2>/dev/null | tr -d '\r' | grep -qx "process_id:$pid"; then
        ok=1
        break
      fi
      sleep 0.1
    done
    [ "$ok" = 1 ] || fail "redis-server on port $p did not come up within 10 s"
  done

  local nodes=()
  for p in "${ports[@]}"; do nodes+=("127.0.0.1:$p"); done
  # (redis-cli colours its report even when it is not on a terminal: the colours are cut.)
  timeout "$WAIT_SECS" redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes \
    | sed "s/\x1b\[[0-9;]*m//g" >&2 \
    || fail "redis-cli --cluster create failed"

  # Every node sees the cluster ok.
  local deadline=$((SECONDS + WAIT_SECS)) pending
  while :; do
    pending=""
    for p in "${ports[@]}"; do
      redis-cli -p "$p" cluster info 2>/dev/null | grep -q '^cluster_state:ok' || pending="$pending $p"
    done
    [ -z "$pending" ] && break
    [ "$SECONDS" -lt "$deadline" ] \
      || fail "the cluster is not ok within ${WAIT_SECS} s (not ok on port(s)$pending)"
    sleep 0.2
  done
  trap - ERR
  say "cluster of $MASTERS masters ok in $((SECONDS - t0)) s on ports ${ports[*]} (files in $dir)"

  local urls=()
  for p in "${ports[@]}"; do urls+=("redis://127.0.0.1:$p"); done
  (IFS=,; echo "${urls[*]}")
}

# A failed step: its message, the servers' logs, what was started stopped, exit 1.
fail() {
  trap - ERR
  say "error: $*"
  show_logs "$DIR"
  stop_cluster "$DIR"
  exit 1
}

[ $# -eq 2 ] || usage
DIR=$2
[ -n "$DIR" ] || usage
case "$1" in
  start) start_cluster "$DIR" ;;
  stop) stop_cluster "$DIR" ;;
  *) usage ;;
esac
