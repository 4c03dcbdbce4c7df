//go:build linux

package bench

import (
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// TestErrorKinds checks each failure is counted under its own kind.
func TestErrorKinds(t *testing.T) {
	tests := []struct {
		name    string
		handler http.HandlerFunc
		cfg     Config
		check   func(*Result) bool
	}{
		{name: "reset", handler: func(w http.ResponseWriter, r *http.Request) {
			c, _, _ := w.(http.Hijacker).Hijack()
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetLinger(0) // RST instead of FIN
			}
			c.Close()
		}, cfg: Config{Conns: 2, Duration: 200 * time.Millisecond},
			check: func(r *Result) bool { return r.Errors.Reset > 0 && r.Lost > 0 && r.Requests == 0 }},
		{name: "timeout", handler: func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
			case <-time.After(2 * time.Second):
			}
		}, cfg: Config{Conns: 2, Duration: 300 * time.Millisecond, Timeout: 100 * time.Millisecond},
			check: func(r *Result) bool { return r.Errors.Timeout > 0 && r.Requests == 0 }},
		{name: "status classes", handler: func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(503)
		}, cfg: Config{Conns: 1, Requests: 20},
			check: func(r *Result) bool { return r.Status[5] == 20 && r.Requests == 20 && r.ErrorTotal() == 0 }},
		{name: "server closes", handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Connection", "close")
			_, _ = w.Write([]byte("bye"))
		}, cfg: Config{Conns: 2, Requests: 30},
			check: func(r *Result) bool { return r.Requests == 30 && r.Reconnects >= 28 && r.ErrorTotal() == 0 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(tt.handler)
			defer srv.Close()
			cfg := tt.cfg
			cfg.URL = srv.URL + "/"
			res, err := Run(t.Context(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(res) {
				t.Fatalf("counts %+v", res.Counts)
			}
		})
	}
}

// TestRunStalls checks a server that stops accepting ends a request-count
// run with ErrStalled instead of retrying forever.
func TestRunStalls(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the stall limit")
	}
	srv, _ := countingServer(t)
	url := srv.URL
	var served int
	res, err := Run(t.Context(), Config{URL: url + "/hello", Conns: 2, Requests: 1 << 40, Timeout: 100 * time.Millisecond,
		ProgressEvery: 50 * time.Millisecond, Progress: func(p Progress) {
			if p.Requests > 0 && served == 0 {
				served = int(p.Requests)
				srv.Close() // stops accepting and closes the connections
			}
		}})
	if !errors.Is(err, ErrStalled) || res == nil || res.Requests == 0 {
		t.Fatalf("err %v, result %+v", err, res)
	}
}
