#!/bin/bash
# bench.sh QUARTET [ADDR [PROVIDER]]: server CPU per GiB and throughput for
# TCP (sendfile) against server-writes and client-reads, N x 16 MiB each
# (N=64 by default), one server, one run; then where the server's time went
# per mode, from its Prometheus metrics: each stage's service time and the
# RDMA module's phases (collect: in the processor from EOS to the hold;
# rdma: posting to the completion in the writer loop; exposure: client-
# reads, grant to revocation), in seconds per GiB delivered.
Q=${1:?usage: bench.sh QUARTET [ADDR [PROVIDER]]} A=${2:-127.0.0.1} PROV=${3:-soft} N=${N:-64}
D=$(mktemp -d); head -c 16777216 /dev/urandom > $D/big.bin
port() { python3 -c 'import socket;s=socket.socket();s.bind(("'$A'",0));print(s.getsockname()[1])'; }
P=$(port) MP=$(port)
$Q serve --addr $A:$P --root $D --rdma $PROV --rdma-addr $A --rdma-dial-timeout 20s --writers 1 --processors 2 --readers 1 \
  --metrics-addr $A:$MP >/tmp/bench-serve.log 2>&1 & S=$!
for i in $(seq 50); do curl -s -o /dev/null http://$A:$P/big.bin && break; sleep 0.2; done
cpu() { awk '{print $14+$15}' /proc/$S/stat; }
# times: "name seconds" lines for the stages' service time and the RDMA phases.
times() {
  curl -s http://$A:$MP/metrics | awk '
    /^quartet_stage_service_seconds_sum/ { match($0, /stage="[a-z]+"/); print substr($0, RSTART+7, RLENGTH-8), $2 }
    /^quartet_rdma_phase_seconds_total/ { match($0, /phase="[a-z]+"/); print "rdma-" substr($0, RSTART+7, RLENGTH-8), $2 }'
}
tck=$(getconf CLK_TCK)
rows=()
for mode in off server-writes client-reads; do
  $Q get http://$A:$P/big.bin -O /dev/null --rdma $mode --provider $PROV --addr $A -q   # warm: cache, channel
  times > /tmp/bench-t0
  c0=$(cpu); t0=$(date +%s.%N)
  $Q get http://$A:$P/big.bin -O /dev/null --rdma $mode --provider $PROV --addr $A -n $N 2>/tmp/bench-get.txt
  t1=$(date +%s.%N); c1=$(cpu)
  sleep 0.5 # the last confirmation, and the writer's last log, land
  times > /tmp/bench-t1
  awk -v m=$mode -v c=$((c1-c0)) -v tck=$tck -v n=$N -v t0=$t0 -v t1=$t1 'BEGIN{g=n*16/1024; printf "%-14s %d x 16 MiB: server CPU %.3f s/GiB, %.0f MiB/s\n", m, n, c/tck/g, n*16/(t1-t0)}'
  rows+=("$(awk -v m=$mode -v n=$N 'NR==FNR { a[$1]=$2; next } { d[$1]=$2-a[$1]; k[++i]=$1 }
    END { g=n*16/1024; printf "%-14s", m; for (j=1; j<=i; j++) printf " %s %.3f", k[j], d[k[j]]/g; printf "  (s/GiB)\n" }' /tmp/bench-t0 /tmp/bench-t1)")
  grep -q "by" /tmp/bench-get.txt || cat /tmp/bench-get.txt
done
echo "where the server's time went (summed over responses, seconds per GiB; stages overlap):"
printf '%s\n' "${rows[@]}"
kill $S; wait $S
