package metrics

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/quartet-server/quartet/runtime"
)

func get(t *testing.T, h http.Handler) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	b, _ := io.ReadAll(rec.Body)
	return rec.Code, string(b)
}

// /readyz follows the server: not before Serve has initialised the
// stages, yes while serving, not once a shutdown has begun; /healthz is
// always 200.
func TestReadyzFollowsTheServer(t *testing.T) {
	srv, err := runtime.New(runtime.Config{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	ready := Ready(srv)
	if code, _ := get(t, ready); code != 503 {
		t.Fatalf("before Serve: %d", code)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for code, _ := get(t, ready); code != 200; code, _ = get(t, ready) {
		if time.Now().After(deadline) {
			t.Fatal("never ready")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if code, body := get(t, Live()); code != 200 || body != "ok\n" {
		t.Fatalf("healthz: %d %q", code, body)
	}
	cancel()
	<-done
	if code, _ := get(t, ready); code != 503 {
		t.Fatalf("after shutdown: %d", code)
	}
	if code, _ := get(t, Live()); code != 200 {
		t.Fatalf("healthz after shutdown: %d", code)
	}
}

func TestBuildInfoMetric(t *testing.T) {
	m := New()
	m.RegisterBuildInfo(BuildInfo{Version: "v1.2.3", Commit: "abc123", GoVersion: "go1.26.8"})
	s := httptest.NewServer(m.Handler())
	defer s.Close()
	fams := scrapeFamilies(t, s.URL)
	got := find(fams, "quartet_build_info", map[string]string{"version": "v1.2.3", "commit": "abc123", "goversion": "go1.26.8"})
	if got == nil || got.GetGauge().GetValue() != 1 {
		t.Fatalf("quartet_build_info: %v", got)
	}
}

func TestReadBuildInfoFallsBackToTheBinary(t *testing.T) {
	if b := ReadBuildInfo(BuildInfo{Version: "v9", Commit: "c0ffee"}); b.Version != "v9" || b.Commit != "c0ffee" {
		t.Fatalf("stamped values not kept: %+v", b)
	}
	b := ReadBuildInfo(BuildInfo{})
	info, _ := debug.ReadBuildInfo()
	if b.GoVersion != info.GoVersion || b.Version == "" || b.Commit == "" || !strings.HasPrefix(b.GoVersion, "go") {
		t.Fatalf("fallback: %+v", b)
	}
}
