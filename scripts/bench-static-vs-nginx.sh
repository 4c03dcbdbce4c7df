#!/usr/bin/env bash
# scripts/bench-static-vs-nginx.sh - static files served by Quartet and by
# Debian's nginx (2 workers) in the same run, taking turns: now a mode of
# `quartet bench compare`, which this script runs with the flags it always
# took. Reports requests/s, server CPU per request (utime+stime of the
# server processes from /proc over each measured run), p99 and Quartet's
# ratios to nginx, for a 4 KiB and a 1 MiB file, pinned (server on CPU 0,
# one nginx worker, GOMAXPROCS=1; wrk on CPU 1) and on both cores.
#
# usage: scripts/bench-static-vs-nginx.sh [-c CONNS] [-d SECONDS] [-r ROUNDS] [-- more compare flags]
set -euo pipefail
cd "$(dirname "$0")/.."
conns=100 dur=10 rounds=3
while getopts c:d:r: o; do
  case $o in c) conns=$OPTARG;; d) dur=$OPTARG;; r) rounds=$OPTARG;; *) exit 2;; esac
done
shift $((OPTIND - 1))
exec go run ./cmd/quartet bench compare --static --conns "$conns" -d "${dur}s" --rounds "$rounds" "$@"
