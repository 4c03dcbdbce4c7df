#!/bin/bash
# ci.sh - the RDMA tier of CI, in one command (run as root from anywhere):
#
#   bash vm/ci.sh
#
# 1. vm/setup.sh: apt packages (qemu, rdma-core, perftest, -dev headers)
#    and the QEMU guest with siw/rxe; skipped when already done.
# 2. On the host: go vet, and go test -tags verbs (the device tests skip:
#    the host kernel has no RDMA), so the cgo build is checked.
# 3. Builds the cgo test binary and quartet with -tags verbs.
# 4. Boots the guest once and runs vm/ci-guest.sh in it: the verbs tests
#    on siw0 and rxe0, quartet rdma ping against rdma-core's rping in both
#    directions on both devices, the soft provider's interop tests
#    against siw0 (rdma/interop), the RDMA delivery engine's and the
#    messenger's RDMA tests (vm/deliver-e2e.sh), and RDMA delivery of
#    HTTP bodies end to end (rdmahttp/vm-e2e.sh: rdmahttp's tests on
#    both devices, quartet serve / get / curl in both modes).
# Prints a summary and exits non-zero if anything failed.  QVM_CI_PERF=1
# also runs vm/perf.sh (a few minutes more).
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
cd "$ROOT"
start=$(date +%s)
summary=() fail=0
step() {  # name, command...
  local name=$1; shift
  local t0; t0=$(date +%s)
  echo "=== vm/ci: $name"
  "$@"; local rc=$?
  if [ $rc = 0 ]; then summary+=("PASS  $name ($(( $(date +%s) - t0 ))s)")
  else summary+=("FAIL  $name (exit $rc, $(( $(date +%s) - t0 ))s)"); fail=$((fail+1)); fi
  return $rc
}
finish() {
  echo "=== vm/ci summary ($(( $(date +%s) - start ))s)"
  printf '%s\n' "${summary[@]}"
  [ $fail = 0 ] && echo "vm/ci: PASS" || echo "vm/ci: FAIL ($fail steps)"
  exit $(( fail > 0 ))
}

step "setup (apt, guest kernel, siw.ko)" bash "$HERE/setup.sh" || finish
export CGO_ENABLED=1
BUILD=$(mktemp -d "${TMPDIR:-/tmp}/quartet-ci.XXXXXX")
trap 'rm -rf "$BUILD"' EXIT
step "host: go vet -tags verbs (rdma/verbs, rdma/rdmatool)" \
  go vet -tags verbs ./rdma/verbs ./rdma/rdmatool
step "host: go test -tags verbs (device tests skip without RDMA)" \
  go test -count=1 -tags verbs ./rdma/verbs ./rdma/rdmatool
step "build: verbs, deliver, msgrdma, runtime and rdmahttp test binaries and quartet with -tags verbs" \
  bash -c "go test -c -tags verbs -o '$BUILD/verbs.test' ./rdma/verbs && go test -c -tags verbs -o '$BUILD/deliver.test' ./rdma/deliver && go test -c -tags verbs -o '$BUILD/msgrdma.test' ./protocol/msg/msgrdma && go test -c -tags verbs -o '$BUILD/runtime.test' ./runtime && go test -c -tags verbs -o '$BUILD/rdmahttp.test' ./rdmahttp && go build -tags verbs -o '$BUILD/quartet' ./cmd/quartet" || finish
# The soft provider's wire interop with the kernel's siw (rdma/interop,
# owned by the rdma engineer) runs in the same boot when it exists.
if [ -d rdma/interop ]; then
  step "build: soft<->siw interop test binary" go test -c -tags verbs -o "$BUILD/interop.test" ./rdma/interop || finish
fi
# The guest's time limit: the tests and interop take 2-4 minutes on a
# loaded machine, rdmahttp's end-to-end runs 4-8; perf.sh alone 2-15.
guest_timeout=1800
[ "${QVM_CI_PERF:-0}" = 1 ] && guest_timeout=2700
# TCG: on these machines KVM cannot boot a stock kernel.  The guest's
# summary lines are repeated after its output, prefixed, for the log.
QVM_PASSENV="QVM_CI_PERF QVM_BENCH" QVM_CI_PERF=${QVM_CI_PERF:-0} \
  step "guest: verbs tests, rping interop, RDMA delivery (engine, messenger, HTTP) on siw0 and rxe0" \
  bash -c "set -o pipefail; '$HERE/run.sh' -t ${QVM_CI_TIMEOUT:-$guest_timeout} -m ${QVM_CI_MEM:-3072} -- '$HERE/ci-guest.sh' '$BUILD' | tee '$BUILD/guest.log'"
if [ -s "$BUILD/guest.log" ]; then
  while read -r line; do summary+=("  guest: $line"); done < <(sed -n '/^=== guest summary/,/^vm: job/{/^\(PASS\|FAIL\)/p}' "$BUILD/guest.log")
fi
finish
