#!/bin/bash
# perf.sh QUARTET - run inside the guest (vm/run.sh -- vm/perf.sh BIN):
# Quartet's RDMA write and read bandwidth and read latency against
# perftest on the same device in the same run, printed as ratios
# (bandwidth: quartet/perftest; latency: perftest/quartet, so above 1 is
# Quartet faster either way).  Both sides busy-poll their CQ, as perftest
# does by default.  Sizes: 64 KiB for bandwidth, 2 B for latency
# (perftest's defaults).  QVM_PERF_ITERS sets the iteration count.
Q=${1:?usage: perf.sh QUARTET_BINARY}
. "$(dirname "$0")/lib.sh"
N=${QVM_PERF_ITERS:-2000} NL=${QVM_PERF_LAT_ITERS:-1000}
port=18600 fail=0
PAIR_DIR=$(mktemp -d)
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
one() {  # name server client -> prints client output on stdout
  run_pair "$1" "$port" "$2" "$3" || { fail=$((fail+1)); port=$((port+1)); echo ""; return; }
  port=$((port+1)); cat "$PAIR_DIR/cli.out"
}
results=()
for dev in siw rxe; do
  case $dev in siw) A=$QVM_SIW_ADDR D=siw0 ;; rxe) A=$QVM_RXE_ADDR D=rxe0 ;; esac
  [ -n "$A" ] || continue
  # perftest's result line starts with the message size; BW average is
  # the 4th column (MB/s, 2^20 bytes), t_typical the 5th and t_avg the 6th.
  pw=$(one "ib_write_bw $D" "ib_write_bw -R -d $D -F -n $N -s 65536 -p $port" \
    "ib_write_bw -R -d $D -F -n $N -s 65536 -p $port $A" | awk '$1 == 65536 {print $4}')
  qw=$(one "quartet write bw $D" "$Q rdma perf --provider verbs -s -a $A -p $port" \
    "$Q rdma perf --provider verbs -c -a $A -p $port -t write -m bw -S 65536 -n $N" | sed -n 's/.*: \([0-9.]*\) MiB\/s.*/\1/p')
  pr=$(one "ib_read_bw $D" "ib_read_bw -R -d $D -F -n $N -s 65536 -p $port" \
    "ib_read_bw -R -d $D -F -n $N -s 65536 -p $port $A" | awk '$1 == 65536 {print $4}')
  qr=$(one "quartet read bw $D" "$Q rdma perf --provider verbs -s -a $A -p $port" \
    "$Q rdma perf --provider verbs -c -a $A -p $port -t read -m bw -S 65536 -n $N" | sed -n 's/.*: \([0-9.]*\) MiB\/s.*/\1/p')
  pl=$(one "ib_read_lat $D" "ib_read_lat -R -d $D -F -n $NL -s 2 -p $port" \
    "ib_read_lat -R -d $D -F -n $NL -s 2 -p $port $A" | awk '$1 == 2 {print $5, $6}')
  ql=$(one "quartet read lat $D" "$Q rdma perf --provider verbs -s -a $A -p $port" \
    "$Q rdma perf --provider verbs -c -a $A -p $port -t read -m lat -S 2 -n $NL" | sed -n 's/.*t_avg \([0-9.]*\) us t_typical \([0-9.]*\) us.*/\2 \1/p')
  set -- $pl; pl_typ=$1 pl_avg=$2
  set -- $ql; ql_typ=$1 ql_avg=$2
  results+=("$(printf '%-5s write bw 64KiB   quartet %9s MiB/s  perftest %9s MiB/s  ratio %s' $D "${qw:-?}" "${pw:-?}" "$(ratio "$qw" "$pw")")")
  results+=("$(printf '%-5s read bw 64KiB    quartet %9s MiB/s  perftest %9s MiB/s  ratio %s' $D "${qr:-?}" "${pr:-?}" "$(ratio "$qr" "$pr")")")
  results+=("$(printf '%-5s read lat 2B typ  quartet %9s us     perftest %9s us     ratio %s' $D "${ql_typ:-?}" "${pl_typ:-?}" "$(ratio "$pl_typ" "$ql_typ")")")
  results+=("$(printf '%-5s read lat 2B avg  quartet %9s us     perftest %9s us     ratio %s' $D "${ql_avg:-?}" "${pl_avg:-?}" "$(ratio "$pl_avg" "$ql_avg")")")
done
echo "=== perf (TCG-emulated guest: compare ratios, not absolute figures); ratio > 1: Quartet faster"
printf '%s\n' "${results[@]}"
echo "=== perf failures=$fail"
exit $fail
