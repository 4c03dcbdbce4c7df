#!/bin/bash
# perf.sh QUARTET - run inside the guest (vm/run.sh -t 1200 -- vm/perf.sh BIN):
# Quartet's RDMA write and read bandwidth and read latency against
# perftest (ib_write_bw -R, ib_read_bw -R, ib_read_lat -R) on the same
# device in the same boot, as ratios: bandwidth quartet/perftest, latency
# perftest/quartet, so above 1 means Quartet is faster either way.
#
# The guest is emulated (TCG) on a shared host, so single runs vary by
# several times: each measurement runs QVM_PERF_ROUNDS times (default 3),
# the tools taking turns, and two ratios are printed: best against best,
# and the median of the rounds' own ratios (each round runs perftest and
# Quartet back to back, so a round's ratio is taken under one set of guest
# conditions; a boot's speed drifts, and best-of can pair the peaks of
# different moments).  Quartet runs
# twice per round: busy-polling its CQ at both ends as perftest does (its
# -R server spins in ibv_poll_cq until the client's end-of-test message),
# and (-e) waiting on the CQ's completion channel fd at both ends as
# Quartet's writer stage does.
# Sizes are perftest's defaults: 64 KiB for bandwidth, 2 B for latency.
#
# In the busy-polling runs the polling threads sit on the same CPUs for
# both tools: every server's on CPU 0, every client's on CPU 1 (perftest is
# one thread: taskset; Quartet: -cpu, which binds only its polling thread,
# where taskset would put the Go runtime's other threads on that CPU too).
# Left to the scheduler, siw's Read latency depended on whether the client
# shared a CPU with the kernel thread that sends the server's responses:
# perftest's client mostly did not, Quartet's often did (8,040 context
# switches in 5,000 Reads against perftest's 215); a client on that CPU
# was about a third slower, for perftest as for Quartet.
# The -e runs, which sleep rather than poll, are left to the scheduler;
# QVM_PERF_PIN=0 leaves all placement to it.
Q=${1:?usage: perf.sh QUARTET_BINARY}
. "$(dirname "$0")/lib.sh"
SRV= CLI= QS= QC=
if [ "${QVM_PERF_PIN:-1}" = 1 ]; then SRV="taskset -c 0" CLI="taskset -c 1" QS="-cpu 0" QC="-cpu 1"; fi
N=${QVM_PERF_ITERS:-1000} NL=${QVM_PERF_LAT_ITERS:-1000} R=${QVM_PERF_ROUNDS:-3}
port=18600 fail=0
PAIR_DIR=$(mktemp -d)
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0 && b > 0) printf "%.2f", a / b; else print "n/a" }'; }
best() { awk -v a="$1" -v b="$2" -v hi="$3" 'BEGIN { if (a == "") print b; else if (b == "") print a; else if (hi ? b > a : b < a) print b; else print a }'; }
# take VAR VALUE HI: keep the best value in VAR (highest if HI, else
# lowest) and every round's value, "-" for a failed run, in rounds_VAR.
take() {
  local r="rounds_$1"
  printf -v "$1" '%s' "$(best "${!1}" "$2" "$3")"
  printf -v "$r" '%s %s' "${!r}" "${2:--}"
}
# paired QUARTET_ROUNDS PERFTEST_ROUNDS HI: the ratio of each round in
# which both ran (bandwidth q/p, latency p/q), and their median.  A round
# runs the two tools back to back, so its ratio is measured under the same
# guest conditions; the best-of ratio compares peaks that may come from
# different moments of a boot whose speed drifts.
paired() {
  awk -v q="$1" -v p="$2" -v hi="$3" 'BEGIN {
    nq = split(q, Q, " "); split(p, P, " "); n = 0
    for (i = 1; i <= nq; i++) if (Q[i] != "-" && P[i] != "-" && Q[i] > 0 && P[i] > 0) R[++n] = hi ? Q[i] / P[i] : P[i] / Q[i]
    if (n == 0) { print "n/a"; exit }
    for (i = 1; i <= n; i++) { for (j = i + 1; j <= n; j++) if (R[j] < R[i]) { t = R[i]; R[i] = R[j]; R[j] = t }; s = s sprintf(" %.2f", R[i]) }
    m = n % 2 ? R[(n + 1) / 2] : (R[n / 2] + R[n / 2 + 1]) / 2
    printf "%.2f (rounds:%s)", m, s
  }'
}
# one NAME SERVER CLIENT: run a pair, print the client's output.
# $P is the port, a fresh one per pair (the caller counts them up).
one() {
  run_pair "$1" "$P" "$2" "$3" || { echo "FAILED $1" >&2; return; }
  cat "$PAIR_DIR/cli.out"
}
results=()
for dev in siw rxe; do
  case $dev in siw) A=$QVM_SIW_ADDR D=siw0 ;; rxe) A=$QVM_RXE_ADDR D=rxe0 ;; esac
  [ -n "$A" ] || continue
  pw= qw= qwe= pr= qr= qre= pl= ql= qle=
  rounds_pw= rounds_qw= rounds_qwe= rounds_pr= rounds_qr= rounds_qre= rounds_pl= rounds_ql= rounds_qle=
  for round in $(seq "$R"); do
    echo "--- $D round $round" >&2
    # perftest's result line starts with the message size: BW average
    # (MB/s of 2^20 bytes) is column 4, t_typical column 5.
    port=$((port+1)); P=$port; v=$(one "ib_write_bw" "$SRV ib_write_bw -R -d $D -F -n $N -s 65536 -p $P" "$CLI ib_write_bw -R -d $D -F -n $N -s 65536 -p $P $A" | awk '$1 == 65536 {print $4}'); take pw "$v" 1
    port=$((port+1)); P=$port; v=$(one "quartet write bw" "$Q rdma perf --provider verbs -s -a $A -p $P $QS" "$Q rdma perf --provider verbs -c -a $A -p $P -t write -m bw -S 65536 -n $N $QC" | sed -n 's/.*: \([0-9.]*\) MiB\/s.*/\1/p'); take qw "$v" 1
    port=$((port+1)); P=$port; v=$(one "quartet write bw -e" "$Q rdma perf --provider verbs -s -a $A -p $P" "$Q rdma perf --provider verbs -c -a $A -p $P -t write -m bw -S 65536 -n $N -e" | sed -n 's/.*: \([0-9.]*\) MiB\/s.*/\1/p'); take qwe "$v" 1
    port=$((port+1)); P=$port; v=$(one "ib_read_bw" "$SRV ib_read_bw -R -d $D -F -n $N -s 65536 -p $P" "$CLI ib_read_bw -R -d $D -F -n $N -s 65536 -p $P $A" | awk '$1 == 65536 {print $4}'); take pr "$v" 1
    port=$((port+1)); P=$port; v=$(one "quartet read bw" "$Q rdma perf --provider verbs -s -a $A -p $P $QS" "$Q rdma perf --provider verbs -c -a $A -p $P -t read -m bw -S 65536 -n $N $QC" | sed -n 's/.*: \([0-9.]*\) MiB\/s.*/\1/p'); take qr "$v" 1
    port=$((port+1)); P=$port; v=$(one "quartet read bw -e" "$Q rdma perf --provider verbs -s -a $A -p $P" "$Q rdma perf --provider verbs -c -a $A -p $P -t read -m bw -S 65536 -n $N -e" | sed -n 's/.*: \([0-9.]*\) MiB\/s.*/\1/p'); take qre "$v" 1
    port=$((port+1)); P=$port; v=$(one "ib_read_lat" "$SRV ib_read_lat -R -d $D -F -n $NL -s 2 -p $P" "$CLI ib_read_lat -R -d $D -F -n $NL -s 2 -p $P $A" | awk '$1 == 2 {print $5}'); take pl "$v" 0
    port=$((port+1)); P=$port; v=$(one "quartet read lat" "$Q rdma perf --provider verbs -s -a $A -p $P $QS" "$Q rdma perf --provider verbs -c -a $A -p $P -t read -m lat -S 2 -n $NL $QC" | sed -n 's/.*t_typical \([0-9.]*\) us.*/\1/p'); take ql "$v" 0
    port=$((port+1)); P=$port; v=$(one "quartet read lat -e" "$Q rdma perf --provider verbs -s -a $A -p $P" "$Q rdma perf --provider verbs -c -a $A -p $P -t read -m lat -S 2 -n $NL -e" | sed -n 's/.*t_typical \([0-9.]*\) us.*/\1/p'); take qle "$v" 0
  done
  row() { printf '%-5s %-22s perftest %9s  quartet %9s (ratio %s)  quartet -e %9s (ratio %s)\n' "$@"; }
  results+=("$(row $D "write bw 64KiB MiB/s" "$pw" "$qw" "$(ratio "$qw" "$pw")" "$qwe" "$(ratio "$qwe" "$pw")")")
  results+=("$(row $D "read bw 64KiB MiB/s" "$pr" "$qr" "$(ratio "$qr" "$pr")" "$qre" "$(ratio "$qre" "$pr")")")
  results+=("$(row $D "read lat 2B typ us" "$pl" "$ql" "$(ratio "$pl" "$ql")" "$qle" "$(ratio "$pl" "$qle")")")
  prow() { printf '%-5s %-22s paired median %s   -e %s\n' "$@"; }
  results+=("$(prow $D "write bw 64KiB" "$(paired "$rounds_qw" "$rounds_pw" 1)" "$(paired "$rounds_qwe" "$rounds_pw" 1)")")
  results+=("$(prow $D "read bw 64KiB" "$(paired "$rounds_qr" "$rounds_pr" 1)" "$(paired "$rounds_qre" "$rounds_pr" 1)")")
  results+=("$(prow $D "read lat 2B" "$(paired "$rounds_ql" "$rounds_pl" 0)" "$(paired "$rounds_qle" "$rounds_pl" 0)")")
  # Each device's rows as soon as they exist, so a timeout keeps them.
  printf '%s\n' "${results[@]: -6}"
done
echo "=== perf: best of $R rounds and median of per-round ratios, $N x 64 KiB (bw) / $NL x 2 B (lat); ratio > 1: Quartet faster; TCG guest"
printf '%s\n' "${results[@]}"
echo "=== perf failures=$fail"
exit $fail
