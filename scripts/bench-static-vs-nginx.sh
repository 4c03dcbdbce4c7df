#!/usr/bin/env bash
# scripts/bench-static-vs-nginx.sh - a 1 MiB static file at 100 keep-alive
# connections, served by Quartet (sendfile) and by Debian's nginx on
# loopback in the same run, taking turns. Reports requests/s and server CPU
# time per request (utime+stime of the server processes from /proc, over
# the measured interval) for each, and Quartet's ratio to nginx.
#
# usage: scripts/bench-static-vs-nginx.sh [-c CONNS] [-d SECONDS] [-r REPEATS] [-s SIZE_BYTES]
set -euo pipefail
cd "$(dirname "$0")/.."
conns=100 dur=10 repeats=3 size=$((1 << 20))
while getopts c:d:r:s: o; do
  case $o in c) conns=$OPTARG;; d) dur=$OPTARG;; r) repeats=$OPTARG;; s) size=$OPTARG;; *) exit 2;; esac
done
for cmd in nginx wrk; do
  command -v $cmd >/dev/null || { echo "need $cmd: apt-get install nginx-light wrk" >&2; exit 2; }
done
work=$(mktemp -d)
trap 'kill $qpid 2>/dev/null; [ -f $work/nginx.pid ] && kill $(cat $work/nginx.pid) 2>/dev/null; rm -rf $work' EXIT
mkdir -p $work/root
head -c "$size" /dev/urandom > $work/root/file.bin
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
qport=$(free_port) nport=$(free_port)

cat > $work/nginx.conf <<NGX
worker_processes $(nproc);
pid $work/nginx.pid;
error_log $work/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  open_file_cache max=1024;
  types { application/octet-stream bin; }
  client_body_temp_path $work;
  proxy_temp_path $work; fastcgi_temp_path $work; uwsgi_temp_path $work; scgi_temp_path $work;
  server { listen 127.0.0.1:$nport; root $work/root; }
}
NGX
nginx -c $work/nginx.conf -e $work/error.log
go build -o $work/quartet ./cmd/quartet
$work/quartet serve --addr 127.0.0.1:$qport --root $work/root 2>$work/quartet.log &
qpid=$!
sleep 1
npids=$(pgrep -P "$(cat $work/nginx.pid)" | tr '\n' ' ')" $(cat $work/nginx.pid)"

cpu_ticks() { # total utime+stime of the given pids, in clock ticks
  local t=0; for p in "$@"; do t=$((t + $(awk '{print $14+$15}' /proc/$p/stat))); done; echo $t
}
hz=$(getconf CLK_TCK)
run() { # name url pids...
  local name=$1 url=$2; shift 2
  local c0; c0=$(cpu_ticks "$@")
  local out; out=$(wrk -t2 -c"$conns" -d"${dur}s" --latency "$url")
  local c1; c1=$(cpu_ticks "$@")
  local reqs; reqs=$(echo "$out" | awk '/requests in/{print $1}')
  local rps; rps=$(echo "$out" | awk '/Requests\/sec/{print $2}')
  local p99; p99=$(echo "$out" | awk '$1=="99%"{print $2}')
  awk -v n="$name" -v r="$reqs" -v s="$rps" -v c=$((c1 - c0)) -v hz="$hz" -v p="$p99" \
    'BEGIN{printf "%-8s %10.0f req/s  %8.1f us CPU/req  p99 %s\n", n, s, c/hz/r*1e6, p}'
}
echo "1 MiB file ($size bytes), $conns connections, ${dur}s per run, $repeats runs each, taking turns"
for i in $(seq "$repeats"); do
  run quartet "http://127.0.0.1:$qport/file.bin" $qpid
  run nginx "http://127.0.0.1:$nport/file.bin" $npids
done | tee $work/results
awk '{rps[$1]+=$2; cpu[$1]+=$4; n[$1]++} END{
  printf "mean: quartet %.0f req/s %.1f us/req; nginx %.0f req/s %.1f us/req\n", rps["quartet"]/n["quartet"], cpu["quartet"]/n["quartet"], rps["nginx"]/n["nginx"], cpu["nginx"]/n["nginx"];
  printf "ratio quartet/nginx: throughput %.2f, server CPU per request %.2f\n", rps["quartet"]/rps["nginx"], cpu["quartet"]/cpu["nginx"] }' $work/results
