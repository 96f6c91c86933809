#!/usr/bin/env bash
# The whole benchmark in one command: instructions per request (callgrind), then
# throughput and latency (wrk), for every bench_server mode, each as ratios to bare
# actix measured in the same run. Paste both tables into BENCHMARKS.md.
#
#   bash bench/run.sh              (ROUNDS, DURATION, CONNECTIONS, N1, N2 as in the two scripts)
set -euo pipefail
cd "$(dirname "$0")/.."
echo "## Instructions per request (bench/callgrind.sh)"
bash bench/callgrind.sh "$@"
echo
echo "## Throughput and latency (bench/load.sh)"
bash bench/load.sh "$@"
