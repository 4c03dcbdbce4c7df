package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quartet-server/quartet/runtime"
)

func startServer(t *testing.T, log io.Writer) *runtime.Server {
	t.Helper()
	s, err := runtime.New(runtime.Config{Addr: "127.0.0.1:0", ProcessorsMin: 2, ProcessorsMax: 64,
		Logger: slog.New(slog.NewTextHandler(log, nil))})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(context.Background()) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(ctx)
		<-done
	})
	return s
}

// A person at a shell reads and changes stage sizes with curl; every
// change is logged with "admin" and the client's address as its cause,
// and a request the server cannot honour is answered with why.
func TestAdmin(t *testing.T) {
	var log syncBuffer
	s := startServer(t, &log)
	h := httptest.NewServer(Handler(s, slog.New(slog.NewTextHandler(io.Discard, nil))))
	defer h.Close()
	for _, tc := range []struct {
		name     string
		method   string
		path     string
		form     url.Values
		json     bool
		code     int
		contains []string
	}{
		{"help", "GET", "/admin/", nil, false, 200, []string{"POST /admin/stages/{stage}", "auto=on|off"}},
		{"every stage", "GET", "/admin/stages", nil, false, 200, []string{"processor  2     2    64   on    yes", "reader", "writer"}},
		{"pin the pool", "POST", "/admin/stages/processor", url.Values{"size": {"32"}}, false, 200, []string{"processor  32    2    64   off"}},
		{"bounds", "POST", "/admin/stages/processor", url.Values{"min": {"4"}, "max": {"16"}}, true, 200, []string{`"size": 16`, `"min": 4`, `"max": 16`, `"auto": false`}},
		{"auto on", "POST", "/admin/stages/processor", url.Values{"auto": {"on"}}, false, 200, []string{"processor  16    4    16   on"}},
		{"one stage as JSON", "GET", "/admin/stages/processor?format=json", nil, false, 200, []string{`"stage": "processor"`, `"resizable": true`}},
		{"a reader loop more", "POST", "/admin/stages/reader", url.Values{"size": {"2"}, "max": {"2"}}, false, 200, []string{"reader  2     1    2    off"}},
		{"back to one writer loop", "POST", "/admin/stages/writer", url.Values{"size": {"1"}, "min": {"1"}}, false, 200, []string{"writer  1     1"}},
		{"a size outside the bounds", "POST", "/admin/stages/processor", url.Values{"size": {"100"}}, false, 400, []string{"outside the bounds 4..16"}},
		{"not a number", "POST", "/admin/stages/processor", url.Values{"size": {"many"}}, false, 400, []string{`size="many"`}},
		{"an unknown field", "POST", "/admin/stages/processor", url.Values{"threads": {"4"}}, false, 400, []string{`unknown field "threads"`}},
		{"nothing to change", "POST", "/admin/stages/processor", url.Values{}, false, 400, []string{"nothing to change"}},
		{"a bad auto", "POST", "/admin/stages/processor", url.Values{"auto": {"maybe"}}, false, 400, []string{"want on or off"}},
		{"no such stage", "GET", "/admin/stages/listener", nil, false, 404, []string{`no stage "listener"`}},
		{"the controller", "GET", "/admin/control", nil, false, 200, []string{"processor controller, period of ", "admission: queue-wait target 500ms", "class", "loop controllers", "drain budget"}},
		{"the controller as JSON", "GET", "/admin/control", nil, true, 200, []string{`"queue_wait_target_seconds": 0.5`, `"period_seconds": `, `"classes": [`, `"stage": "reader"`, `"drain_budget":`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var body io.Reader
			if tc.form != nil {
				body = strings.NewReader(tc.form.Encode())
			}
			req, _ := http.NewRequest(tc.method, h.URL+tc.path, body)
			if tc.form != nil {
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			}
			if tc.json {
				req.Header.Set("Accept", "application/json")
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.code {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.code, b)
			}
			for _, want := range tc.contains {
				if !strings.Contains(string(b), want) {
					t.Errorf("answer lacks %q:\n%s", want, b)
				}
			}
			if tc.json && tc.code == 200 && !json.Valid(b) {
				t.Errorf("not JSON: %s", b)
			}
		})
	}
	if !strings.Contains(log.String(), `cause="admin 127.0.0.1:`) {
		t.Errorf("changes not logged with the admin as their cause:\n%s", log.String())
	}
	if z, _ := s.StageSize(runtime.StageProcessor); z.Min != 4 || z.Max != 16 || !z.Auto {
		t.Errorf("the server's processor stage is %+v", z)
	}
}

// Only clients on this machine may use it.
func TestAdminLoopbackOnly(t *testing.T) {
	s := startServer(t, io.Discard)
	h := Handler(s, slog.New(slog.NewTextHandler(io.Discard, nil)))
	for _, tc := range []struct {
		remote string
		code   int
	}{
		{"192.0.2.7:40000", 403},
		{"[2001:db8::1]:40000", 403},
		{"127.0.0.1:40000", 200},
		{"[::1]:40000", 200},
	} {
		req := httptest.NewRequest("GET", "/admin/stages", nil)
		req.RemoteAddr = tc.remote
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != tc.code {
			t.Errorf("from %s: %d, want %d", tc.remote, rec.Code, tc.code)
		}
	}
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
