#!/usr/bin/env bash
# scripts/bench-syscalls.sh - system calls per request under load: runs
# `quartet serve`, loads /hello with wrk at C keep-alive connections, and
# counts the server's syscalls with strace -c -f over the run. strace slows
# the server down; the counts per request are what this is for, not speed.
#
# usage: scripts/bench-syscalls.sh [-c CONNS] [-d SECONDS] [-- serve flags...]
set -euo pipefail
cd "$(dirname "$0")/.."
conns=100 dur=5
while getopts c:d: o; do
  case $o in c) conns=$OPTARG;; d) dur=$OPTARG;; *) exit 2;; esac
done
shift $((OPTIND - 1))
for cmd in strace wrk; do
  command -v $cmd >/dev/null || { echo "need $cmd: apt-get install strace wrk" >&2; exit 2; }
done
work=$(mktemp -d)
trap 'kill $spid 2>/dev/null; rm -rf $work' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
go build -o $work/quartet ./cmd/quartet
$work/quartet serve --addr 127.0.0.1:$port "$@" 2>$work/serve.log &
spid=$!
sleep 1
wrk -t2 -c"$conns" -d1s http://127.0.0.1:$port/hello >/dev/null # warm up, connections open
strace -c -f -q -p $spid -o $work/strace.txt &
tpid=$!
sleep 0.5
reqs=$(wrk -t2 -c"$conns" -d"${dur}s" http://127.0.0.1:$port/hello | awk '/requests in/{print $1}')
sleep 0.2
kill -INT $tpid; wait $tpid 2>/dev/null || true
echo "$reqs requests at $conns connections"
awk -v r="$reqs" '/^ *[0-9.]+ +[0-9.]+ +[0-9]+ +[0-9]+/{
    calls=$4; name=$NF; if ($5 ~ /^[0-9]+$/) name=$6; if (calls+0 > 0) printf "  %-16s %8.3f per request\n", name, calls/r
  }' $work/strace.txt
