#!/usr/bin/env bash
# scripts/bench-auto-vs-static.sh - the self-sized default against fixed
# reader/writer loop counts, in alternating rounds on one URL path: each
# round starts `quartet serve` once per configuration (demo mode), warms
# it up with wrk for 2 s (the controllers settle), waits 3 s, then runs
# wrk -t1 keep-alive for the measured duration with nothing pinned, and
# prints requests/s, server CPU per request (utime+stime from
# /proc/PID/stat over the measured run) and the loop-count changes the
# default's controllers logged. Compare medians over the rounds: a
# two-core machine's single rounds vary by tens of percent.
#
# usage: scripts/bench-auto-vs-static.sh [-q QUARTET] [-p PATH] [-c CONNS] [-d SECONDS] [-r ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
q="" path=/hello conns=1000 dur=5 rounds=3
while getopts q:p:c:d:r: o; do
  case $o in q) q=$OPTARG;; p) path=$OPTARG;; c) conns=$OPTARG;; d) dur=$OPTARG;; r) rounds=$OPTARG;; *) exit 2;; esac
done
if [ -z "$q" ]; then
  q=$(mktemp -d)/quartet
  go build -o "$q" ./cmd/quartet
fi
command -v wrk >/dev/null || { echo "bench-auto-vs-static: wrk not installed" >&2; exit 1; }
names=(auto R1W1 R2W1 R1W2 R2W2)
declare -A flags=([auto]="" [R1W1]="--readers 1 --writers 1" [R2W1]="--readers 2 --writers 1"
  [R1W2]="--readers 1 --writers 2" [R2W2]="--readers 2 --writers 2")
ulimit -n "$(ulimit -Hn)"
tck=$(getconf CLK_TCK)
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for r in $(seq 1 "$rounds"); do
  for n in "${names[@]}"; do
    port=$((20000 + RANDOM % 20000))
    # shellcheck disable=SC2086 # the flags are words
    "$q" serve --addr 127.0.0.1:$port ${flags[$n]} >"$log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/hello" && break; sleep 0.1; done
    wrk -t1 -c"$conns" -d2s "http://127.0.0.1:$port$path" >/dev/null 2>&1
    sleep 3
    t0=$(awk '{print $14+$15}' /proc/$pid/stat)
    out=$(wrk -t1 -c"$conns" -d"${dur}s" "http://127.0.0.1:$port$path" 2>&1)
    t1=$(awk '{print $14+$15}' /proc/$pid/stat)
    reqs=$(echo "$out" | awk '/requests in/{print $1}')
    rps=$(echo "$out" | awk '/Requests\/sec/{print $2}')
    errs=$(echo "$out" | grep -E 'Non-2xx|Socket errors' | tr '\n' ' ' || true)
    moves=$(grep -o 'stage=\(reader\|writer\) from=[0-9]* to=[0-9]*' "$log" | tr '\n' ' ' || true)
    cpu=$(awk -v a="$t0" -v b="$t1" -v t="$tck" -v n="$reqs" 'BEGIN{printf "%.2f", (b-a)/t*1e6/n}')
    echo "round $r $n req/s=$rps server-cpu-us/req=$cpu $errs$moves"
    kill -INT $pid
    wait $pid 2>/dev/null || true
  done
done
