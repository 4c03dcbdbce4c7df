#!/bin/bash
# interop.sh QUARTET - run inside the guest (vm/run.sh -- vm/interop.sh BIN):
# quartet rdma ping against rdma-core's rping in both directions, on every
# device the guest has (siw0 and rxe0), data verified on both sides
# (rping -V checks the bytes quartet's server wrote back; quartet's client
# always compares).  Exit status: the number of failed pairs.
Q=${1:?usage: interop.sh QUARTET_BINARY}
fail=0 port=17174 count=${QVM_PING_COUNT:-10}
t() { echo "=== [$(cut -d' ' -f1 /proc/uptime)s] $*"; }
. "$(dirname "$0")/lib.sh"
PAIR_DIR=$(mktemp -d)
pair() {  # name, server cmd, client cmd
  t "$1"
  if run_pair "$1" "$port" "$2" "$3"; then
    local got; got=$(grep -c "ping data: rdma-ping-" "$PAIR_DIR/cli.out")
    if [ "$got" = "$count" ]; then
      echo "--- PASS $1 ($got pings, data verified)"
    else
      echo "--- FAIL $1: $got of $count pings"; fail=$((fail+1))
    fi
  else
    echo "--- FAIL $1"; fail=$((fail+1))
  fi
  port=$((port+1))
}
t "quartet rdma devices"; $Q rdma --provider verbs devices || fail=$((fail+1))
for dev in siw rxe; do
  case $dev in siw) A=$QVM_SIW_ADDR ;; rxe) A=$QVM_RXE_ADDR ;; esac
  [ -n "$A" ] || continue
  pair "${dev}0: quartet rdma ping -c against rping -s" \
    "rping -s -a $A -p $port -S 100 -v -V" \
    "$Q rdma ping --provider verbs -c -a $A -p $port -C $count -S 100 -v"
  pair "${dev}0: rping -c against quartet rdma ping -s" \
    "$Q rdma ping --provider verbs -s -a $A -p $port -S 100 -v" \
    "rping -c -a $A -p $port -C $count -S 100 -v -V"
done
t "interop done, failures=$fail"
exit $fail
