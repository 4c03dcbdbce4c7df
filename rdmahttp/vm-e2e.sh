#!/bin/bash
# vm-e2e.sh QUARTET [RDMAHTTP_TEST] - in the guest (vm/run.sh -- ...):
#
# 1. With RDMAHTTP_TEST (go test -c -tags verbs ./rdmahttp): rdmahttp's
#    own tests on siw0 and rxe0 through the verbs provider, both roles on
#    the device: both modes with sha256, plain HTTP, fallback for an
#    unreachable / foreign endpoint, forged, replayed and other clients'
#    keys, unconfirmed exposures timing out, a client process SIGKILLed
#    while exposed, failed Writes falling back in the same response.
# 2. quartet serve --rdma verbs on siw0 and rxe0, quartet get in both
#    modes with the verbs provider and (siw0) with the soft provider,
#    curl, concurrent clients; QVM_BIG=1 adds 64 MiB bodies and 64
#    concurrent clients with bodies from 0 B to 64 MiB (give the guest
#    -m 6144); QVM_BENCH=1 runs bench.sh.
# 3. The kernel's RDMA resource counts (rdma resource show) back to
#    where they started.
# Exit status: the number of failures.
Q=${1:?usage: vm-e2e.sh QUARTET [RDMAHTTP_TEST]}
T=$2
fail=0
. "$(dirname "$0")/../vm/lib.sh"
t() { echo "=== [$(cut -d' ' -f1 /proc/uptime)s] $*"; }
# resources: the kernel's counts of PDs, CQs, QPs, cm_ids and MRs over
# both devices (ctx excluded: rdma resource keeps none after exit).
resources() { rdma resource show 2>/dev/null | grep -oE '(pd|cq|qp|cm_id|mr) [0-9]+' | tr '\n' ' '; }
res_before=$(resources)
if [ -n "$T" ]; then
  for dev in siw rxe; do
    case $dev in siw) A=$QVM_SIW_ADDR ;; rxe) A=$QVM_RXE_ADDR ;; esac
    [ -n "$A" ] || continue
    t "rdmahttp tests on ${dev}0 ($A)"
    # The tests' testdata and relative paths are the package's.
    if (cd "$(dirname "$0")" && QUARTET_RDMA_TEST_PROVIDER=verbs QUARTET_RDMA_TEST_ADDR=$A "$T" -test.timeout 600s -test.v > /tmp/rdmahttp-$dev.log 2>&1); then
      echo "--- PASS ${dev}0 rdmahttp tests: $(grep -c '^--- PASS' /tmp/rdmahttp-$dev.log) passed, $(grep -c '^--- SKIP' /tmp/rdmahttp-$dev.log) skipped"
    else
      echo "--- FAIL ${dev}0 rdmahttp tests:"; failure_lines /tmp/rdmahttp-$dev.log
      fail=$((fail+1))
    fi
    grep -E 'device_test.go.*released' /tmp/rdmahttp-$dev.log | sed 's/^ */    /'
  done
fi
D=$(mktemp -d)
head -c 16777217 /dev/urandom > $D/big.bin
head -c 4097 /dev/urandom > $D/small.bin
: > $D/empty.bin
$Q rdma --provider verbs devices | grep -iE "name|caps|window" | head -8
# /dev/infiniband out of the server's mount namespace, as in a container
# started without --device or a systemd service with PrivateDevices=yes:
# --rdma verbs fails saying so, and auto serves with the software provider
# and a warning that says the same.
t "devices hidden from the server"
hidden=$(unshare -m bash -c "mount -t tmpfs none /dev/infiniband && $Q serve --addr 127.0.0.1:8090 --rdma verbs 2>&1")
if echo "$hidden" | grep -q -- "--rdma verbs: .*no RDMA device: the kernel has rxe0, siw0, but /dev/infiniband/uverbs0: no such file or directory"; then
  echo "--- PASS --rdma verbs, /dev/infiniband hidden: $hidden"
else echo "--- FAIL --rdma verbs, /dev/infiniband hidden: $hidden"; fail=$((fail+1)); fi
unshare -m bash -c "mount -t tmpfs none /dev/infiniband && exec $Q serve --addr 127.0.0.1:8091 --rdma auto" > /tmp/hidden-auto.log 2>&1 & hpid=$!
for i in $(seq 50); do curl -s -o /dev/null http://127.0.0.1:8091/hello && break; sleep 0.2; done
if curl -sf http://127.0.0.1:8091/hello >/dev/null && grep -q 'provider=soft' /tmp/hidden-auto.log &&
  grep -q "level=WARN msg=\"rdma: the kernel's RDMA devices are out of reach; serving RDMA with the soft provider\" err=\"rdma: no RDMA device: the kernel has rxe0, siw0" /tmp/hidden-auto.log; then
  echo "--- PASS --rdma auto, /dev/infiniband hidden: soft, with a warning"
else echo "--- FAIL --rdma auto, /dev/infiniband hidden:"; cat /tmp/hidden-auto.log; fail=$((fail+1)); fi
kill $hpid; wait $hpid 2>/dev/null
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
    # issue 7's sizes and concurrency: a 64 MiB body in both modes, then
    # 64 clients at once.
    [ -f $D/huge.bin ] || head -c 67108864 /dev/urandom > $D/huge.bin
    [ -f $D/mid.bin ] || head -c 1048576 /dev/urandom > $D/mid.bin
    for mode in server-writes client-reads; do
      t "$dev server, verbs client, $mode, 64 MiB"
      timeout 600 $Q get http://$A:$port/huge.bin -O /tmp/o --rdma $mode --provider verbs --addr $A --op-timeout 300s --buffer 67108864 2>/tmp/e
      check "${dev}0 verbs $mode 64MiB" "by $mode" huge.bin /tmp/o /tmp/e
      rm -f /tmp/o
    done
    # 64 clients at once, half of each mode, bodies of every size from
    # 0 B to 64 MiB (client i fetches size i % 5), sha256 checked.
    sizes=(empty.bin small.bin mid.bin big.bin huge.bin)
    t "$dev server, 64 concurrent verbs clients, 0 B to 64 MiB"
    pids=
    for i in $(seq 64); do
      mode=server-writes; [ $((i%2)) = 0 ] && mode=client-reads
      f=${sizes[$((i%5))]}
      buf=$(stat -c %s $D/$f); [ $buf -ge 4096 ] || buf=4096 # each client pins its buffer
      (timeout 900 $Q get http://$A:$port/$f -O /tmp/m$i --rdma $mode --provider verbs --addr $A --op-timeout 300s --buffer $buf 2>/tmp/me$i; echo "$mode $f" > /tmp/mm$i) & pids="$pids $!"
    done
    wait $pids
    ok=0 bytes=0
    for i in $(seq 64); do
      read -r mode f < /tmp/mm$i
      if cmp -s /tmp/m$i $D/$f && grep -q "by $mode" /tmp/me$i; then ok=$((ok+1)); bytes=$((bytes+$(stat -c %s $D/$f))); else echo "    client $i ($mode, $f): $(cat /tmp/me$i)"; fi
      rm -f /tmp/m$i
    done
    if [ $ok = 64 ]; then echo "--- PASS ${dev}0 64 concurrent clients, both modes, 0 B to 64 MiB ($((bytes>>20)) MiB by RDMA)"; else echo "--- FAIL ${dev}0 64 concurrent: $ok of 64"; fail=$((fail+1)); fi
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
res_after=$(resources)
if [ "$res_before" = "$res_after" ]; then echo "--- PASS kernel RDMA resources back to where they started: $res_after"
else echo "--- FAIL kernel RDMA resources: before: $res_before after: $res_after"; fail=$((fail+1)); fi
t "done, failures=$fail"
exit $fail
