//go:build linux

package bench

import (
	"bytes"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestIdle(t *testing.T) {
	tests := []struct {
		name    string
		counts  []int
		active  int // busy connections at each step
		wantErr error
	}{
		{name: "two steps", counts: []int{50, 200}},
		{name: "busy connections among the idle", counts: []int{50, 100}, active: 4},
		{name: "beyond any fd limit", counts: []int{20, 1 << 30}, wantErr: ErrFDLimit},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, served := countingServer(t)
			var pts []IdlePoint
			var err error
			checkReleased(t, func() {
				pts, err = Idle(t.Context(), IdleConfig{URL: srv.URL + "/hello", Counts: tt.counts, PID: os.Getpid(), Settle: 1,
					Active: tt.active, ActiveFor: 200 * time.Millisecond})
				srv.CloseClientConnections()
			})
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err %v, want %v", err, tt.wantErr)
			}
			want := len(tt.counts)
			if tt.wantErr != nil {
				want--
			}
			if len(pts) != want {
				t.Fatalf("%d points, want %d: %+v", len(pts), want, pts)
			}
			for i, p := range pts {
				if p.Conns != tt.counts[i] || p.RSS == 0 || p.OpenTime <= 0 {
					t.Errorf("point %d: %+v", i, p)
				}
				if busy := p.ActiveRate > 0 && p.ActiveP99 > 0 && p.ActiveP99 >= p.ActiveP50; busy != (tt.active > 0) || p.ActiveErrors != 0 {
					t.Errorf("point %d: active probe: %+v", i, p)
				}
			}
			if tt.active > 0 {
				if got := served.Load(); got <= int64(pts[len(pts)-1].Conns) {
					t.Errorf("server saw %d requests: the busy connections sent none", got)
				}
			} else if got := served.Load(); got != int64(pts[len(pts)-1].Conns) {
				t.Errorf("server saw %d requests, want one per connection (%d)", got, pts[len(pts)-1].Conns)
			}
		})
	}
}

// TestIdleCountsServerCloses checks connections the server closes while
// held idle are counted, not mistaken for memory per connection.
func TestIdleCountsServerCloses(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("Hello, World!"))
	}))
	srv.Config.IdleTimeout = 50 * time.Millisecond
	srv.Start()
	defer srv.Close()
	pts, err := Idle(t.Context(), IdleConfig{URL: srv.URL + "/hello", Counts: []int{20}, PID: os.Getpid(), Settle: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if len(pts) != 1 || pts[0].Closed != 20 || pts[0].Conns != 20 {
		t.Fatalf("points %+v, want 20 connections all closed by the server", pts)
	}
}

// bench idle refuses what it cannot measure as a usage error (exit 2),
// and fails (exit 1) when a server stopped short: it once exited 0 with
// rows saying "server stopped", and took -n 200,100 or -settle -1s.
func TestIdleMainExitStatus(t *testing.T) {
	srv, _ := countingServer(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String() + "/hello"
	ln.Close()
	pid := strconv.Itoa(os.Getpid())
	tests := []struct {
		name  string
		args  []string
		usage bool
		fails bool // a failure that is not a usage error
	}{
		{name: "measured", args: []string{"-n", "5,10", "-settle", "1ms", "--server-pid", pid, srv.URL + "/hello"}},
		{name: "descending", args: []string{"-n", "200,100", "--server-pid", pid, srv.URL}, usage: true},
		{name: "repeated", args: []string{"-n", "100,100", "--server-pid", pid, srv.URL}, usage: true},
		{name: "negative settle", args: []string{"-settle", "-1s", "--server-pid", pid, srv.URL}, usage: true},
		{name: "negative active", args: []string{"-active", "-1", "--server-pid", pid, srv.URL}, usage: true},
		{name: "negative active-for", args: []string{"-active-for", "-1s", "--server-pid", pid, srv.URL}, usage: true},
		{name: "zero active-for", args: []string{"-active-for", "0s", "--server-pid", pid, srv.URL}, usage: true},
		{name: "unknown server", args: []string{"--servers", "quartet,bogus"}, usage: true},
		{name: "URL without pid", args: []string{srv.URL}, usage: true},
		{name: "unreachable", args: []string{"-n", "5", "--server-pid", pid, dead}, fails: true},
		{name: "resets", args: []string{"-n", "5", "--server-pid", pid, resettingServer(t) + "/hello"}, fails: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := Main(t.Context(), append([]string{"idle"}, tt.args...), Env{Stdout: &stdout, Stderr: &stderr})
			switch {
			case tt.usage && !errors.Is(err, ErrUsage):
				t.Fatalf("error %v, want a usage error", err)
			case tt.fails && (err == nil || errors.Is(err, ErrUsage)):
				t.Fatalf("error %v, want a failure that is not a usage error\n%s", err, stdout.String())
			case !tt.usage && !tt.fails && err != nil:
				t.Fatalf("error %v\n%s", err, stdout.String())
			}
			if tt.fails && !strings.Contains(stdout.String(), "stopped") {
				t.Errorf("the table does not say where it stopped:\n%s", stdout.String())
			}
		})
	}
}
