#!/bin/bash
# vm-e2e.sh QUARTET - in the guest (vm/run.sh -- ... QUARTET): quartet
# serve --rdma verbs on siw0 and rxe0, quartet get in both modes with the
# verbs provider and (siw0) with the soft provider, curl, and concurrent
# clients. Exit status: failures.
Q=${1:?usage: vm-e2e.sh QUARTET}
fail=0
t() { echo "=== [$(cut -d' ' -f1 /proc/uptime)s] $*"; }
D=$(mktemp -d)
head -c 16777217 /dev/urandom > $D/big.bin
head -c 4097 /dev/urandom > $D/small.bin
: > $D/empty.bin
$Q rdma --provider verbs devices | grep -iE "name|caps|window" | head -8
check() { # name, expected "by ..." text, file, out, errfile
  if cmp -s "$4" "$D/$3" && grep -q "$2" "$5"; then echo "--- PASS $1: $(cat $5)"; else echo "--- FAIL $1: $(cat $5)"; fail=$((fail+1)); fi
}
for dev in siw rxe; do
  case $dev in siw) A=$QVM_SIW_ADDR ;; rxe) A=$QVM_RXE_ADDR ;; esac
  [ -n "$A" ] || continue
  port=8080
  $Q serve --addr $A:$port --root $D --rdma verbs --rdma-addr $A --writers 2 --rdma-dial-timeout 20s > /tmp/serve-$dev.log 2>&1 & spid=$!
  for i in $(seq 50); do curl -s -o /dev/null http://$A:$port/empty.bin && break; sleep 0.2; done
  head -2 /tmp/serve-$dev.log
  provs=verbs; [ $dev = siw ] && provs="verbs soft"
  for prov in $provs; do
    for mode in server-writes client-reads; do
      for f in empty small big; do
        t "$dev server, $prov client, $mode, $f"
        timeout 300 $Q get http://$A:$port/$f.bin -O /tmp/o --rdma $mode --provider $prov --addr $A --op-timeout 60s --buffer 20000000 2>/tmp/e
        check "${dev}0 $prov $mode $f" "by $mode" $f.bin /tmp/o /tmp/e
      done
    done
    # concurrent clients, both modes at once
    t "$dev server, 8 concurrent $prov clients"
    for i in 1 2 3 4 5 6 7 8; do
      mode=server-writes; [ $((i%2)) = 0 ] && mode=client-reads
      (timeout 600 $Q get http://$A:$port/big.bin -O /tmp/c$i --rdma $mode --provider $prov --addr $A --op-timeout 120s --buffer 20000000 2>/tmp/ce$i; echo $mode > /tmp/cm$i) &
    done
    wait $(jobs -p | grep -v "^$spid$") 2>/dev/null
    for i in 1 2 3 4 5 6 7 8; do check "${dev}0 $prov concurrent $i" "by $(cat /tmp/cm$i)" big.bin /tmp/c$i /tmp/ce$i; done
  done
  if [ -n "$QVM_BIG" ]; then
    # issue 7's sizes and concurrency: a 64 MiB body in both modes, and 64
    # clients at once (half of each mode) on a 1 MiB body.
    [ -f $D/huge.bin ] || head -c 67108864 /dev/urandom > $D/huge.bin
    [ -f $D/mid.bin ] || head -c 1048576 /dev/urandom > $D/mid.bin
    for mode in server-writes client-reads; do
      t "$dev server, verbs client, $mode, 64 MiB"
      timeout 600 $Q get http://$A:$port/huge.bin -O /tmp/o --rdma $mode --provider verbs --addr $A --op-timeout 300s --buffer 67108864 2>/tmp/e
      check "${dev}0 verbs $mode 64MiB" "by $mode" huge.bin /tmp/o /tmp/e
      rm -f /tmp/o
    done
    t "$dev server, 64 concurrent verbs clients, 1 MiB"
    pids=
    for i in $(seq 64); do
      mode=server-writes; [ $((i%2)) = 0 ] && mode=client-reads
      (timeout 600 $Q get http://$A:$port/mid.bin -O /tmp/m$i --rdma $mode --provider verbs --addr $A --op-timeout 300s --buffer 1048576 2>/tmp/me$i; echo $mode > /tmp/mm$i) & pids="$pids $!"
    done
    wait $pids
    ok=0
    for i in $(seq 64); do
      if cmp -s /tmp/m$i $D/mid.bin && grep -q "by $(cat /tmp/mm$i)" /tmp/me$i; then ok=$((ok+1)); else echo "    client $i: $(cat /tmp/me$i)"; fi
    done
    if [ $ok = 64 ]; then echo "--- PASS ${dev}0 64 concurrent clients, both modes, 1 MiB each"; else echo "--- FAIL ${dev}0 64 concurrent: $ok of 64"; fail=$((fail+1)); fi
  fi
  t "$dev curl"
  curl -s -o /tmp/o http://$A:$port/big.bin; echo ok > /tmp/e; check "${dev}0 curl plain" ok big.bin /tmp/o /tmp/e
  kill $spid; wait $spid
  if grep -q "level=ERROR" /tmp/serve-$dev.log; then echo "--- FAIL ${dev}0 serve log:"; cat /tmp/serve-$dev.log; fail=$((fail+1)); else echo "--- PASS ${dev}0 serve shut down cleanly (RDMA resources released)"; fi
done
if [ -n "$QVM_BENCH" ]; then
  for dev in siw rxe; do
    case $dev in siw) A=$QVM_SIW_ADDR ;; rxe) A=$QVM_RXE_ADDR ;; esac
    t "bench ${dev}0 (N=${N:-4} x 16 MiB per mode)"
    N=${N:-4} bash "$(dirname "$0")/bench.sh" "$Q" "$A" verbs
  done
fi
t "done, failures=$fail"
exit $fail
