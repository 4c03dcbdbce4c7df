#!/bin/bash
# million.sh - in the guest: hold up to a million idle keep-alive
# connections to one server and report, at each step, the server's RSS per
# connection, the time to open the step's connections, and the latency of
# a few busy connections among the idle ones (quartet bench idle --active).
# Server and load generator both run in the guest, which has no fd cap;
# the host's per-process cap is 20,000.
#
# usage (host):
#   go build -o /tmp/qm/quartet ./cmd/quartet
#   (cd bench/peers && go build -o /tmp/qm/peers/ ./...)
#   vm/run.sh -t 3600 -m 12288 -r siw -- vm/million.sh /tmp/qm/quartet /tmp/qm/peers
#
# Environment (pass with QVM_PASSENV="QVM_SERVERS QVM_COUNTS ..."):
#   QVM_SERVERS  servers, one after another (default quartet,gnet,nethttp)
#   QVM_COUNTS   connection counts, ascending (default 100000,250000,500000,1000000)
#   QVM_COUNTS_nethttp  counts for net/http, whose ~20 KiB per connection
#                       cannot reach a million in the guest (default 100000,250000)
#   QVM_ACTIVE   busy connections at each step (default 100), QVM_ACTIVE_FOR (default 10s)
#
# Each connection pair costs the guest kernel about two TCP sockets, files
# and epoll entries (measured below as the change in MemAvailable), which
# is what bounds the count before the server does. Connections come from
# 127.0.0.x source addresses, each with the whole port range: one address
# has ~64k ports towards one server port.
set -uo pipefail
QUARTET=${1:?usage: million.sh QUARTET PEERDIR}
PEERS=${2:?usage: million.sh QUARTET PEERDIR}
servers=${QVM_SERVERS:-quartet,gnet,nethttp}
counts=${QVM_COUNTS:-100000,250000,500000,1000000}
active=${QVM_ACTIVE:-100}
active_for=${QVM_ACTIVE_FOR:-10s}

sysctl -q -w fs.nr_open=2200000 fs.file-max=4400000 \
  net.core.somaxconn=65535 net.ipv4.tcp_max_syn_backlog=65535 \
  net.ipv4.ip_local_port_range="1024 65535" || exit 1
ulimit -n 2100000 || exit 1
echo "guest: $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r)"

avail() { awk '/MemAvailable/ {print int($2/1024)}' /proc/meminfo; }
# What bounds the count is the guest's memory: sample it while the
# connections open (and the kernel's socket count with it).
( while sleep 30; do
    echo "guest: MemAvailable $(avail) MiB, $(awk '/^TCP:/ {print $3}' /proc/net/sockstat) TCP sockets in use" >&2
  done ) &
sampler=$!
trap 'kill $sampler 2>/dev/null' EXIT
rc=0 k=0
for s in ${servers//,/ }; do
  n=$counts
  v=QVM_COUNTS_$s
  if [ -n "${!v:-}" ]; then n=${!v}; elif [ "$s" = nethttp ]; then n=100000,250000; fi
  before=$(avail)
  start=$(date +%s)
  echo "== $s: $n idle connections, $active active for $active_for each step"
  # The table, and one progress line in 20 (one per 100k connections).
  "$QUARTET" bench idle -n "$n" -servers "$s" --peer-bin "$PEERS" --active "$active" --active-for "$active_for" 2>&1 |
    while IFS= read -r line; do # not awk: mawk reads its input in blocks
      case $line in *"connections open"*) k=$((k + 1)); [ $((k % 20)) = 0 ] || continue ;; esac
      printf '%s\n' "$line"
    done
  [ "${PIPESTATUS[0]}" = 0 ] || rc=1
  echo "== $s: done in $(( $(date +%s) - start )) s; guest MemAvailable $(avail) MiB (was $before MiB before it)"
  dmesg | grep -iE 'out of memory|oom-kill|TCP: too many|socket:|nf_conntrack' | tail -5
done
exit $rc
