package rdmatool

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

// These run the tools between two goroutines on loopback with the soft
// provider, which needs no device; vm/interop.sh runs ping against
// rdma-core's rping on real devices.

// freePort finds a TCP port that is free right now (the soft provider's
// listener is TCP).
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return fmt.Sprint(l.Addr().(*net.TCPAddr).Port)
}

// pair runs the server command, then the client once the server listens,
// and returns both outputs.
func pair(t *testing.T, run func(context.Context, string, []string, *bytes.Buffer, *bytes.Buffer) error, srvArgs, cliArgs []string) (string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var sout, serr, cout, cerr bytes.Buffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, "soft", srvArgs, &sout, &serr) }()
	port := srvArgs[len(srvArgs)-1]
	for i := 0; i < 100; i++ { // wait until the server listens
		if c, err := net.Dial("tcp", "127.0.0.1:"+port); err == nil {
			c.Close()
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := run(ctx, "soft", cliArgs, &cout, &cerr); err != nil {
		t.Fatalf("client: %v\n%s", err, cerr.String())
	}
	if err := <-done; err != nil {
		t.Fatalf("server: %v\n%s", err, serr.String())
	}
	return sout.String(), cout.String()
}

func TestPingSoftLoopback(t *testing.T) {
	port := freePort(t)
	ping := func(ctx context.Context, p string, a []string, o, e *bytes.Buffer) error {
		return Ping(ctx, p, a, o, e)
	}
	srv, cli := pair(t, ping,
		[]string{"-s", "-v", "-S", "100", "-a", "127.0.0.1", "-p", port},
		[]string{"-c", "-v", "-S", "100", "-C", "5", "-a", "127.0.0.1", "-p", port})
	if n := strings.Count(cli, "ping data: rdma-ping-"); n != 5 {
		t.Errorf("client printed %d pings, want 5:\n%s", n, cli)
	}
	if !strings.Contains(cli, "ping data: rdma-ping-4: EFGHIJ") {
		t.Errorf("ping 4 text differs from rping's:\n%s", cli)
	}
	if n := strings.Count(srv, "server ping data: rdma-ping-"); n != 5 {
		t.Errorf("server printed %d pings, want 5:\n%s", n, srv)
	}
}

func TestPerfSoftLoopback(t *testing.T) {
	perf := func(ctx context.Context, p string, a []string, o, e *bytes.Buffer) error {
		return Perf(ctx, p, a, o, e)
	}
	for _, tc := range [][]string{
		{"-t", "write", "-m", "bw", "-n", "200"},
		{"-t", "write", "-m", "bw", "-n", "200", "-S", "4096"}, // moderated: one signalled in 16
		{"-t", "read", "-m", "bw", "-n", "200"},
		{"-t", "send", "-m", "bw", "-n", "200"},
		{"-t", "read", "-m", "lat", "-n", "100"},
		{"-t", "write", "-m", "lat", "-n", "100", "-e"},
		{"-t", "read", "-m", "lat", "-n", "100", "-cpu", "0"},
	} {
		t.Run(strings.Join(tc, ""), func(t *testing.T) {
			port := freePort(t)
			_, cli := pair(t, perf,
				[]string{"-s", "-a", "127.0.0.1", "-p", port},
				append([]string{"-c", "-a", "127.0.0.1", "-p", port}, tc...))
			t.Log(strings.TrimSpace(cli))
			if !strings.Contains(cli, "MiB/s") && !strings.Contains(cli, "t_avg") {
				t.Errorf("no result line: %q", cli)
			}
		})
	}
}

func TestPingFlags(t *testing.T) {
	var out, errb bytes.Buffer
	for _, args := range [][]string{{}, {"-s", "-c"}, {"-c"}, {"-s", "-S", "10"}, {"-s", "-C", "-1"}} {
		if err := Ping(context.Background(), "soft", args, &out, &errb); err == nil {
			t.Errorf("Ping %v: no error", args)
		}
	}
}

// Like perftest, perf moderates completions only up to 8 KiB: siw sends
// larger unsignalled requests on another (slower, page by page) path.
func TestPerfSignalEvery(t *testing.T) {
	for size, want := range map[int]int{2: perfSignalEvery, 8192: perfSignalEvery, 8193: 1, 65536: 1} {
		if got := signalEvery(size); got != want {
			t.Errorf("signalEvery(%d) = %d, want %d", size, got, want)
		}
	}
}

func TestParsePerfParams(t *testing.T) {
	be := func(v ...uint32) []byte {
		b := make([]byte, 0, 4*len(v))
		for _, x := range v {
			b = binary.BigEndian.AppendUint32(b, x)
		}
		return b
	}
	for _, tc := range []struct {
		name      string
		pd        []byte
		wantErr   bool
		wantFlags uint32
	}{
		{"with flags", be(testRead, 2, 1000, perfBusyPoll), false, perfBusyPoll},
		{"events", be(testWrite, 65536, 5000, 0), false, 0},
		{"older client without flags", be(testSend, 64, 10), false, 0},
		{"short", be(testRead, 2), true, 0},
		{"empty", nil, true, 0},
		{"unknown test", be(7, 2, 10, 0), true, 0},
		{"zero size", be(testRead, 0, 10, 0), true, 0},
		{"zero iterations", be(testRead, 2, 0, 0), true, 0},
		{"size over 1 GiB", be(testRead, 1<<30+1, 10, 0), true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, _, flags, err := parsePerfParams(tc.pd)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if flags != tc.wantFlags {
				t.Errorf("flags = %#x, want %#x", flags, tc.wantFlags)
			}
		})
	}
}

func TestPerfFlags(t *testing.T) {
	var out, errb bytes.Buffer
	for _, args := range [][]string{
		{}, {"-s", "-c"}, {"-c"}, {"-s", "-t", "atomic"}, {"-s", "-m", "both"},
		{"-c", "-a", "127.0.0.1", "-S", "1073741825"}, {"-c", "-a", "127.0.0.1", "-n", "-1"},
	} {
		if err := Perf(context.Background(), "soft", args, &out, &errb); err == nil {
			t.Errorf("Perf %v: no error", args)
		}
	}
}
