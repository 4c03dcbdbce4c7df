#!/bin/bash
# ci-guest.sh DIR - the guest half of vm/ci.sh: runs, in one boot, the
# verbs provider's tests (on siw0 and rxe0; they check the kernel's
# resource counts themselves), the rping interop and, when built, the
# soft provider's interop with siw (rdma/interop), the delivery engine's
# and the messenger's RDMA tests (vm/deliver-e2e.sh), RDMA delivery of
# HTTP bodies (rdmahttp/vm-e2e.sh), from binaries
# ci.sh built into DIR; QVM_CI_PERF=1 adds perf.sh.  Prints one summary
# line per step and exits with the number of failed steps.
D=${1:?usage: ci-guest.sh BUILD_DIR}
HERE=$(cd "$(dirname "$0")" && pwd)
summary=() fail=0
step() {  # name, command...
  local name=$1; shift
  local t0; t0=$(cut -d' ' -f1 /proc/uptime)
  echo "=== step: $name"
  "$@"; local rc=$?
  local dt; dt=$(awk -v a="$t0" -v b="$(cut -d' ' -f1 /proc/uptime)" 'BEGIN { printf "%.0f", b - a }')
  if [ $rc = 0 ]; then summary+=("PASS  $name (${dt}s)"); else summary+=("FAIL  $name (exit $rc, ${dt}s)"); fail=$((fail+1)); fi
}
step "rdma/verbs tests on siw0 and rxe0 (go test -tags verbs, resource counts checked)" \
  "$D/verbs.test" -test.v -test.timeout 600s
step "rping interop: quartet rdma ping <-> rping, both directions, siw0 and rxe0" \
  "$HERE/interop.sh" "$D/quartet"
if [ -x "$D/interop.test" ]; then
  step "rdma/interop: soft provider against the kernel's siw0 through rdma-core" \
    "$D/interop.test" -test.v -test.timeout 600s
fi
step "rdma/deliver and the messenger's replies by RDMA: tests on siw0 and rxe0, resource counts checked" \
  "$HERE/deliver-e2e.sh" "$D"
step "rdmahttp end to end: tests and quartet serve/get/curl, both modes, siw0 and rxe0" \
  "$HERE/../rdmahttp/vm-e2e.sh" "$D/quartet" "$D/rdmahttp.test"
if [ "${QVM_CI_PERF:-0}" = 1 ]; then
  step "perf: quartet rdma perf vs perftest" "$HERE/perf.sh" "$D/quartet"
fi
echo "=== guest summary"
printf '%s\n' "${summary[@]}"
exit $fail
