#!/bin/bash
# bench.sh QUARTET ADDR PROVIDER: server CPU per GiB and throughput, TCP vs server-writes vs client-reads.
Q=$1 A=${2:-127.0.0.1} PROV=${3:-soft} N=${N:-64}
D=$(mktemp -d); head -c 16777216 /dev/urandom > $D/big.bin
P=$(python3 -c 'import socket;s=socket.socket();s.bind(("'$A'",0));print(s.getsockname()[1])')
$Q serve --addr $A:$P --root $D --rdma $PROV --rdma-addr $A --rdma-dial-timeout 20s --writers 1 --processors 2 --readers 1 >/tmp/bench-serve.log 2>&1 & S=$!
for i in $(seq 50); do curl -s -o /dev/null http://$A:$P/big.bin && break; sleep 0.2; done
cpu() { awk '{print $14+$15}' /proc/$S/stat; }
tck=$(getconf CLK_TCK)
for mode in off server-writes client-reads; do
  $Q get http://$A:$P/big.bin -O /dev/null --rdma $mode --provider $PROV --addr $A -q   # warm: cache, channel
  c0=$(cpu); t0=$(date +%s.%N)
  $Q get http://$A:$P/big.bin -O /dev/null --rdma $mode --provider $PROV --addr $A -n $N 2>/tmp/bench-get.txt
  t1=$(date +%s.%N); c1=$(cpu)
  awk -v m=$mode -v c=$((c1-c0)) -v tck=$tck -v n=$N -v t0=$t0 -v t1=$t1 'BEGIN{g=n*16/1024; printf "%-14s %d x 16 MiB: server CPU %.3f s/GiB, %.0f MiB/s\n", m, n, c/tck/g, n*16/(t1-t0)}'
  grep -q "by" /tmp/bench-get.txt || cat /tmp/bench-get.txt
done
kill $S; wait $S
