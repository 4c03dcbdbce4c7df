# lib.sh - helpers for the guest-side scripts (sourced, not run).

# wait_listen PORT: wait (up to 20 s) until an rdma_cm id listens on PORT,
# so a client never connects before its server is ready (an early connect
# is rejected, and under TCG a server can take seconds to start).
wait_listen() {
  local i
  for i in $(seq 100); do
    rdma resource show cm_id 2>/dev/null | grep LISTEN | grep -q ":$1 " && return 0
    sleep 0.2
  done
  echo "no listener on port $1 after 20 s" >&2
  return 1
}

# run_pair NAME PORT SERVER-CMD CLIENT-CMD: start the server in the
# background, wait for its listener, run the client; outputs go to
# $PAIR_DIR/{srv,cli}.out; returns non-zero unless both exit 0.
run_pair() {
  local name=$1 port=$2 srv=$3 cli=$4
  PAIR_DIR=${PAIR_DIR:-$(mktemp -d)}
  timeout 120 $srv > "$PAIR_DIR/srv.out" 2>&1 & local spid=$!
  wait_listen "$port"
  timeout 120 $cli > "$PAIR_DIR/cli.out" 2>&1; local crc=$?
  wait $spid; local src=$?
  [ $src = 0 ] && [ $crc = 0 ] && return 0
  echo "--- $name: server rc=$src client rc=$crc" >&2
  sed 's/^/    server: /' "$PAIR_DIR/srv.out" | tail -5 >&2
  sed 's/^/    client: /' "$PAIR_DIR/cli.out" | tail -5 >&2
  return 1
}

# failure_lines LOG: what a failed go test binary's -test.v LOG says
# about the failure: its FAIL and log lines and any panic; and when no
# test reported a FAIL (the binary died: a runtime fatal error, a signal,
# a C library's abort), the test that was running, the crash's first
# lines (the signal, where it arrived, the goroutine it hit: the dump's
# tail is the other goroutines and the registers) and the log's last 40.
failure_lines() {
  grep -E '^(---|    |panic|FAIL|fatal error)' "$1" | grep -v -- '--- PASS' | head -40
  if ! grep -q -- '--- FAIL' "$1"; then
    echo "    (no test reported a FAIL; the last test started: $(grep -E '^=== (RUN|CONT)' "$1" | tail -1))"
    echo "    (the crash begins:)"
    grep -m1 -A30 -E '^(SIG[A-Z]+: |fatal error: |panic: |unexpected fault)' "$1" | sed 's/^/    | /'
    echo "    (the log ends:)"
    tail -40 "$1" | sed 's/^/    | /'
  fi
}
