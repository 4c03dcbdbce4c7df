package metrics

import (
	"bytes"
	"context"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/quartet-server/quartet/rdma/deliver"
	"github.com/quartet-server/quartet/rdma/soft"
	"github.com/quartet-server/quartet/rdmahttp"
	"github.com/quartet-server/quartet/runtime"
	"github.com/quartet-server/quartet/static"
)

// TestRDMAScrape delivers one body by each RDMA mode through a real server
// with the software provider and checks the scrape reports them: the
// outcome counters, the bytes written, time in each phase, and no live
// exposure or window once the client-reads exposure is confirmed (MRs and
// the QP stay: the file cache and the cached channel hold them).
func TestRDMAScrape(t *testing.T) {
	dir := t.TempDir()
	body := bytes.Repeat([]byte("quartet "), 40000)
	if err := os.WriteFile(filepath.Join(dir, "b.bin"), body, 0o644); err != nil {
		t.Fatal(err)
	}
	files, err := static.NewDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	mod, err := rdmahttp.NewServer(rdmahttp.Config{Provider: soft.New(soft.Config{})})
	if err != nil {
		t.Fatal(err)
	}
	m := New()
	m.Registry().MustRegister(RDMA(mod.Stats))
	rc := runtime.DefaultConfig()
	rc.Addr = "127.0.0.1:0"
	rc.Readers, rc.Processors, rc.Writers = 1, 2, 1
	rc.Handler = runtime.Builtin(files)
	rc.Modules = []runtime.Module{m.Module(), mod.Module()}
	srv, err := runtime.New(rc)
	if err != nil {
		t.Fatal(err)
	}
	m.Attach(srv)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(context.Background()) }()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		if err := mod.Close(); err != nil {
			t.Errorf("rdmahttp Close: %v", err)
		}
	}()
	c, err := rdmahttp.NewClient(rdmahttp.ClientConfig{Provider: soft.New(soft.Config{}), Addr: "127.0.0.1:0", BufferSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	url := "http://" + srv.Addr().String() + "/b.bin"
	for _, mode := range []deliver.Mode{deliver.ModeServerWrites, deliver.ModeClientReads} {
		var got bytes.Buffer
		r, err := c.Get(context.Background(), url, mode, func(*rdmahttp.Response) (io.Writer, error) { return &got, nil })
		if err != nil || r.Mode != mode || !bytes.Equal(got.Bytes(), body) {
			t.Fatalf("%v: %v, by %v, %d bytes", mode, err, r, got.Len())
		}
	}

	scrape := httptest.NewServer(m.Handler())
	defer scrape.Close()
	var fams map[string]*dto.MetricFamily
	// The confirmation that ends the exposure arrives after the client's
	// Get has returned: scrape until the live counts are back to zero.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		fams = scrapeFamilies(t, scrape.URL)
		live := 0.0
		for _, k := range []string{"mw", "exposure"} {
			live += gaugeValue(fams, "quartet_rdma_live", map[string]string{"kind": k})
		}
		if live == 0 && counter(fams, "quartet_rdma_deliveries_total", map[string]string{"outcome": "confirmed"}) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the exposure was not released: %v", fams["quartet_rdma_live"])
		}
	}
	for outcome, want := range map[string]float64{"written": 1, "exposed": 1, "confirmed": 1, "timed_out": 0, "lost": 0, "fallback": 0} {
		if got := counter(fams, "quartet_rdma_deliveries_total", map[string]string{"outcome": outcome}); got != want {
			t.Errorf("deliveries %s = %v, want %v", outcome, got, want)
		}
	}
	if got := counter(fams, "quartet_rdma_written_bytes_total", nil); got != float64(len(body)) {
		t.Errorf("written bytes %v, want %d", got, len(body))
	}
	for _, phase := range []string{"collect", "rdma", "exposure"} {
		if counter(fams, "quartet_rdma_phase_seconds_total", map[string]string{"phase": phase}) <= 0 {
			t.Errorf("no time in phase %s", phase)
		}
	}
	if got := counter(fams, "quartet_rdma_dials_total", nil); got != 1 {
		t.Errorf("dials %v, want 1 (the channel is cached between requests)", got)
	}
}

func gaugeValue(fams map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	m := find(fams, name, labels)
	if m == nil {
		return -1
	}
	return m.GetGauge().GetValue()
}
