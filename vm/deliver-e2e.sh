#!/bin/bash
# deliver-e2e.sh DIR - in the guest (vm/ci-guest.sh, or vm/run.sh -- ...):
# the RDMA delivery engine's tests (rdma/deliver) and the messenger's
# replies by RDMA (protocol/msg/msgrdma: echo byte-exact from 0 B to
# 64 MiB in both modes under both signallings, pipelined connections
# sharing an endpoint, lost operations asked again or falling back to
# TCP, fallbacks) on siw0 and rxe0 through the verbs provider, from the
# test binaries vm/ci.sh built into DIR (deliver.test, msgrdma.test, with
# -tags verbs), and the messenger by RDMA through the stages (runtime.test,
# TestMsgEchoByRDMA). Afterwards the kernel's RDMA resource counts (rdma
# resource show) must be back where they started: every PD, CQ, QP,
# cm_id and MR the engines and endpoints made was released.
# QVM_BENCH=1 also runs BenchmarkReplies (sparse signalling against
# signalling every reply) on each device.
# Exit status: the number of failures.
D=${1:?usage: deliver-e2e.sh BUILD_DIR}
fail=0
. "$(dirname "$0")/lib.sh"
t() { echo "=== [$(cut -d' ' -f1 /proc/uptime)s] $*"; }
resources() { rdma resource show 2>/dev/null | grep -oE '(pd|cq|qp|cm_id|mr) [0-9]+' | tr '\n' ' '; }
res_before=$(resources)
for dev in siw rxe; do
  case $dev in siw) A=$QVM_SIW_ADDR ;; rxe) A=$QVM_RXE_ADDR ;; esac
  [ -n "$A" ] || continue
  for pkg in deliver msgrdma; do
    [ -x "$D/$pkg.test" ] || { echo "--- FAIL $D/$pkg.test missing"; fail=$((fail+1)); continue; }
    t "$pkg tests on ${dev}0 ($A)"
    log=/tmp/$pkg-$dev.log
    if QUARTET_RDMA_TEST_PROVIDER=verbs QUARTET_RDMA_TEST_ADDR=$A "$D/$pkg.test" -test.timeout 900s -test.v > $log 2>&1; then
      echo "--- PASS ${dev}0 $pkg tests: $(grep -c -- '--- PASS' $log) passed, $(grep -c -- '--- SKIP' $log) skipped"
    else
      echo "--- FAIL ${dev}0 $pkg tests:"; failure_lines $log
      fail=$((fail+1))
    fi
    grep -E 'exposures confirmed by|completions \(' $log | sed 's/^ */    /' | head -4
  done
  # The messenger's replies by RDMA through the real stages (a
  # runtime.Server with the engine on its writer loops): echo byte-exact
  # from 0 B to 64 MiB in both modes, and many in flight on one
  # connection, each behind its own completion.
  if [ -x "$D/runtime.test" ]; then
    t "the messenger by RDMA through the stages on ${dev}0 ($A)"
    log=/tmp/runtime-$dev.log
    if QUARTET_RDMA_TEST_PROVIDER=verbs QUARTET_RDMA_TEST_ADDR=$A "$D/runtime.test" -test.run '^TestMsgEchoByRDMA$' -test.timeout 900s -test.v > $log 2>&1; then
      echo "--- PASS ${dev}0 runtime TestMsgEchoByRDMA: $(grep -c -- '--- PASS' $log) passed"
    else
      echo "--- FAIL ${dev}0 runtime TestMsgEchoByRDMA:"; failure_lines $log
      fail=$((fail+1))
    fi
  fi
  if [ -n "$QVM_BENCH" ]; then
    t "BenchmarkReplies on ${dev}0"
    for i in 1 2 3; do
      QUARTET_RDMA_TEST_PROVIDER=verbs QUARTET_RDMA_TEST_ADDR=$A "$D/msgrdma.test" -test.run '^$' -test.bench 'Replies/server-writes' -test.benchtime ${QVM_BENCH_N:-500}x 2>&1 | grep Benchmark
    done
  fi
done
res_after=$(resources)
if [ "$res_before" = "$res_after" ]; then echo "--- PASS kernel RDMA resources back to where they started: $res_after"
else echo "--- FAIL kernel RDMA resources: before: $res_before after: $res_after"; fail=$((fail+1)); fi
t "done, failures=$fail"
exit $fail
