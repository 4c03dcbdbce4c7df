#!/usr/bin/env bash
# scripts/bench-instructions.sh - instructions the server executes per
# request, counted by valgrind's callgrind. CPU time per request on a
# shared two-core machine moves by 10% between rounds of the same binary;
# instruction counts move by about 1%, so a change of a few percent on the
# request path can be seen at all. (Instructions are not time: cache misses
# and system calls do not show. Confirm a gain in CPU time with `quartet
# bench compare` before claiming one.)
#
# Runs `quartet serve` with GOMAXPROCS=1 under callgrind, warms it with W
# requests from the project's generator, zeroes the counters, sends N more
# on C keep-alive connections, and prints the server's instructions per
# request (everything the process ran meanwhile: the runtime, timers and
# controllers included) and the functions that ran most of them. Periodic
# work is counted over a run that valgrind slows some 15 times, so it
# weighs that much more per request than at full speed: the controllers'
# sampling (runtime.(*Server).sample, every 100 ms) shows as about 5% of
# /hello, which at full speed is about 0.4%. With -g,
# the gnet peer (bench/peers/gnet) the same way, and the ratio; the
# peer's count moves more between runs (about 15%: how often its loop
# spins on an empty poll depends on timing).
#
# usage: scripts/bench-instructions.sh [-c CONNS] [-n REQUESTS] [-w WARMUP]
#            [-p PATH] [-t TOP] [-g] [-- serve flags...]
set -euo pipefail
cd "$(dirname "$0")/.."
conns=100 n=10000 warm=1000 path=/hello top=25 gnet=
while getopts c:n:w:p:t:g o; do
  case $o in c) conns=$OPTARG;; n) n=$OPTARG;; w) warm=$OPTARG;; p) path=$OPTARG;;
    t) top=$OPTARG;; g) gnet=1;; *) exit 2;; esac
done
shift $((OPTIND - 1))
for cmd in valgrind callgrind_control callgrind_annotate curl; do
  command -v $cmd >/dev/null || { echo "need $cmd: apt-get install valgrind curl" >&2; exit 2; }
done
work=$(mktemp -d)
spid=
trap '[ -n "$spid" ] && kill -9 $spid 2>/dev/null; rm -rf $work' EXIT
go build -o $work/quartet ./cmd/quartet
if [ -n "$gnet" ]; then (cd bench/peers && go build -o $work/gnet ./gnet); fi

# count NAME ARGV...: prints NAME's instructions per request.
count() {
  local name=$1; shift
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  # Signals upset callgrind, so no asynchronous preemption; and the
  # valgrind of Debian 12 does not decode RDTSCP, which Go's runtime uses
  # where the CPU has it.
  GOMAXPROCS=1 GODEBUG=asyncpreemptoff=1,cpu.rdtscp=off \
    valgrind --tool=callgrind --callgrind-out-file=$work/$name.%p "$@" "127.0.0.1:$port" \
    >$work/$name.log 2>&1 &
  spid=$!
  local url=http://127.0.0.1:$port$path
  for _ in $(seq 200); do
    curl -s -o /dev/null "$url" && break
    kill -0 $spid 2>/dev/null || { cat $work/$name.log >&2; exit 1; }
    sleep 0.2
  done
  $work/quartet bench -c "$conns" -t 1 -n "$warm" "$url" >/dev/null
  callgrind_control -z $spid >/dev/null
  $work/quartet bench -c "$conns" -t 1 -n "$n" "$url" >$work/$name.bench
  callgrind_control -d $spid >/dev/null
  local dump
  for _ in $(seq 100); do
    dump=$(ls $work/$name.$spid.* 2>/dev/null | head -1)
    [ -n "$dump" ] && grep -q '^totals:' "$dump" && break
    sleep 0.1
  done
  kill -9 $spid 2>/dev/null; wait $spid 2>/dev/null || true
  spid=
  local total
  total=$(awk '/^totals:/{print $2; exit}' "$dump")
  [ -n "$total" ] || { echo "$name: no callgrind dump" >&2; exit 1; }
  echo "$name $total" >>$work/totals
  echo "$name: $((total / n)) instructions per request ($n requests of $path on $conns connections, GOMAXPROCS=1)"
  [ "$name" = quartet ] || return 0 # the peer's total is what is compared
  # (Exclusive counts; a few runtime functions that switch stacks, such as
  # mcall, are shown with what ran on the stack they switched to.)
  callgrind_annotate --threshold=100 "$dump" 2>/dev/null | sed -n '/file:function/,/^-- Auto-annotated/p' |
    grep -E '^ *[0-9,]+ \(' | sed -n "1,${top}p" |
    awk -v n="$n" '{ c = $1; gsub(",", "", c); sub(/^[^)]*\) */, ""); printf "%8.0f  %s\n", c / n, $0 }' |
    sed 's#github.com/quartet-server/quartet/##g; s# \[[^]]*\]$##'
}

count quartet $work/quartet serve "$@" --addr
if [ -n "$gnet" ]; then
  count gnet $work/gnet -addr
  awk '{t[$1]=$2} END {printf "quartet / gnet: %.2fx instructions per request\n", t["quartet"] / t["gnet"]}' $work/totals
fi
