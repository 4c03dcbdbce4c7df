package metrics

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/quartet-server/quartet/reader"
	"github.com/quartet-server/quartet/runtime"
	"github.com/quartet-server/quartet/writer"
)

// countingConn counts the bytes a client really received.
type countingConn struct {
	net.Conn
	n *int64
}

func (c countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	*c.n += int64(n)
	return n, err
}

// startExported runs a server with the built-in endpoints and an exporter
// until the test ends, and serves the exporter's metrics.
func startExported(t *testing.T, cfg runtime.Config) (*runtime.Server, *httptest.Server) {
	t.Helper()
	m := New()
	cfg.Addr, cfg.Handler, cfg.Modules = "127.0.0.1:0", runtime.Builtin(nil), []runtime.Module{m.Module()}
	srv, err := runtime.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m.Attach(srv)
	go srv.Serve(context.Background())
	scrape := httptest.NewServer(m.Handler())
	t.Cleanup(func() {
		scrape.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return srv, scrape
}

func TestMetricsScrapeParsesAndAddsUp(t *testing.T) {
	srv, scrape := startExported(t, runtime.Config{})

	// Requests over one raw connection, counting every byte received.
	raw, err := net.Dial("tcp", srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	var received int64
	c := countingConn{raw, &received}
	br := bufio.NewReader(c)
	paths := []string{"/hello", "/bytes?n=1000", "/nope", "/hello", "/bytes?n=5"}
	for _, p := range paths {
		fmt.Fprintf(raw, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", p)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	raw.Close()

	var fams map[string]*dto.MetricFamily
	ok := false
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline) && !ok; time.Sleep(10 * time.Millisecond) {
		fams = scrapeFamilies(t, scrape.URL)
		// The writer counts bytes when a response's last byte is out; the
		// processor records its service time after handing the response
		// over, which may be later: wait for both.
		h := find(fams, "quartet_stage_service_seconds", map[string]string{"stage": "processor"})
		ok = counter(fams, "quartet_sent_bytes_total", nil) == float64(received) &&
			h != nil && h.GetHistogram().GetSampleCount() >= uint64(len(paths))
	}
	if got := counter(fams, "quartet_sent_bytes_total", nil); got != float64(received) {
		t.Fatalf("bytes sent %v, client received %d", got, received)
	}
	if got := counter(fams, "quartet_responses_total", map[string]string{"code": "200"}); got != 4 {
		t.Errorf("200 responses: %v, want 4", got)
	}
	if got := counter(fams, "quartet_responses_total", map[string]string{"code": "404"}); got != 1 {
		t.Errorf("404 responses: %v, want 1", got)
	}
	for _, stage := range []string{"reader", "processor", "writer"} {
		lbl := map[string]string{"stage": stage}
		if counter(fams, "quartet_stage_dequeued_total", lbl) < 5 {
			t.Errorf("%s dequeued %v, want >= 5", stage, counter(fams, "quartet_stage_dequeued_total", lbl))
		}
		h := find(fams, "quartet_stage_service_seconds", lbl)
		if h == nil || h.GetHistogram().GetSampleCount() < 5 || len(h.GetHistogram().GetBucket()) == 0 {
			t.Errorf("%s service-time histogram missing or empty: %v", stage, h)
		}
		if find(fams, "quartet_stage_queue_depth", lbl) == nil {
			t.Errorf("%s queue depth missing", stage)
		}
	}
	for _, state := range []string{"idle", "reading", "queued", "processing", "parked", "writing", "lingering"} {
		if find(fams, "quartet_connections", map[string]string{"state": state}) == nil {
			t.Errorf("connections in state %q missing", state)
		}
	}
	if m := find(fams, "quartet_handlers_parked_max", nil); m == nil || m.GetGauge().GetValue() <= 0 {
		t.Errorf("parked handlers' bound missing: %v", m)
	}
	// Config{} leaves every slow-client limit at its default: /metrics
	// shows the values in force, not the zeros of the struct.
	for setting, want := range map[string]float64{
		"preread_body_bytes":                 float64(reader.DefaultPrereadBody),
		"min_body_rate_bytes_per_second":     reader.DefaultMinBodyRate,
		"min_body_rate_grace_seconds":        reader.DefaultMinBodyRateGrace.Seconds(),
		"min_response_rate_bytes_per_second": writer.DefaultMinRate,
		"min_response_rate_grace_seconds":    writer.DefaultMinRateGrace.Seconds(),
	} {
		m := find(fams, "quartet_client_limit", map[string]string{"setting": setting})
		if m == nil || m.GetGauge().GetValue() != want {
			t.Errorf("client limit %s = %v, want %v", setting, m, want)
		}
	}
	for _, name := range []string{"quartet_handlers_parked", "quartet_handlers_park_refused_total",
		"quartet_connections_reset_total", "quartet_connections_hung_up_total", "quartet_loop_nudges_total",
		"quartet_loop_awaits_total"} {
		if find(fams, name, nil) == nil {
			t.Errorf("%s missing", name)
		}
	}
	for _, op := range []string{"read", "send"} {
		for _, name := range []string{"quartet_io_batched_total", "quartet_io_batches_total"} {
			if find(fams, name, map[string]string{"op": op}) == nil {
				t.Errorf("%s{op=%q} missing", name, op)
			}
		}
	}
	for _, reason := range []string{"slow_header", "slow_body", "slow_reader", "write_timeout"} {
		if find(fams, "quartet_clients_cut_off_total", map[string]string{"reason": reason}) == nil {
			t.Errorf("cut-offs for %s missing", reason)
		}
	}
	if find(fams, "quartet_stage_dropped_total", map[string]string{"stage": "processor"}) == nil {
		t.Errorf("dropped requests missing")
	}
	if find(fams, "quartet_stage_failed_total", map[string]string{"stage": "processor"}) == nil {
		t.Errorf("failed requests (handler panics) missing")
	}
	if counter(fams, "quartet_connections_accepted_total", nil) != 1 {
		t.Errorf("accepted %v, want 1", counter(fams, "quartet_connections_accepted_total", nil))
	}
}

func find(fams map[string]*dto.MetricFamily, name string, labels map[string]string) *dto.Metric {
	f := fams[name]
	if f == nil {
		return nil
	}
next:
	for _, m := range f.GetMetric() {
		for k, v := range labels {
			found := false
			for _, lp := range m.GetLabel() {
				if lp.GetName() == k && lp.GetValue() == v {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		return m
	}
	return nil
}

func counter(fams map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	m := find(fams, name, labels)
	if m == nil {
		return -1
	}
	if m.GetCounter() != nil {
		return m.GetCounter().GetValue()
	}
	return m.GetGauge().GetValue()
}

// scrapeFamilies GETs url and parses the body as Prometheus text.
func scrapeFamilies(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("the scrape does not parse as Prometheus text: %v", err)
	}
	return fams
}

// Stage sizes and bounds, the controller's inputs and the request classes
// are exported, and the shed counter agrees with the 503s sent.
func TestMetricsSizesControlAndShedding(t *testing.T) {
	// Readers pinned: on a loaded machine the reader controller may add a
	// loop while the test runs, and the size below is the configured one.
	srv, scrape := startExported(t, runtime.Config{Processors: 1, Readers: 1, QueueWaitTarget: 20 * time.Millisecond})
	if err := srv.SetStageBounds(runtime.StageProcessor, 1, 16); err != nil {
		t.Fatal(err)
	}
	if err := srv.SetStageSize(runtime.StageProcessor, 1); err != nil {
		t.Fatal(err)
	}

	// Ten clients on 10 ms handlers with one place and a 20 ms target:
	// most are refused once the class has a service time.
	done := make(chan struct{})
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			raw, err := net.Dial("tcp", srv.Addr().String())
			if err != nil {
				return
			}
			defer raw.Close()
			br := bufio.NewReader(raw)
			for {
				select {
				case <-done:
					return
				default:
				}
				fmt.Fprintf(raw, "GET /sleep?ms=10 HTTP/1.1\r\nHost: x\r\n\r\n")
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
	// The processor's service time is the controller's estimate over its
	// last period: read it while the load runs, since a period after the
	// load has ended, in which nothing finished, reports 0 (the test
	// failed about every other run without -race reading it afterwards).
	var fams map[string]*dto.MetricFamily
	var service float64
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		fams = scrapeFamilies(t, scrape.URL)
		service = counter(fams, "quartet_stage_service_time_seconds", map[string]string{"stage": "processor"})
		if counter(fams, "quartet_shed_total", map[string]string{"class": "sleep"}) > 0 && service > 0 {
			break
		}
	}
	close(done)
	wg.Wait()
	// The writer counts a 503 once it is sent, which may be after its
	// client has read it and gone: scrape until the counts meet.
	var shed, sent float64
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		fams = scrapeFamilies(t, scrape.URL)
		shed = 0 // every class's: the first requests are class "other" until /sleep earns its own
		for _, m := range fams["quartet_shed_total"].GetMetric() {
			shed += m.GetCounter().GetValue()
		}
		sent = counter(fams, "quartet_responses_total", map[string]string{"code": "503"})
		if sent == shed || time.Now().After(deadline) {
			break
		}
	}
	if s := counter(fams, "quartet_shed_total", map[string]string{"class": "sleep"}); s <= 0 {
		t.Fatalf("no request of class sleep shed: %v", s)
	}
	if sent != shed {
		t.Errorf("%v shed, %v 503s sent", shed, sent)
	}
	for _, c := range []struct {
		name  string
		stage string
		want  float64
	}{
		{"quartet_stage_size", "processor", 1},
		{"quartet_stage_size_min", "processor", 1},
		{"quartet_stage_size_max", "processor", 16},
		{"quartet_stage_auto", "processor", 0},
		{"quartet_stage_size", "reader", float64(srv.Config().Readers)},
		{"quartet_stage_size_max", "writer", float64(srv.Config().WritersMax)},
		{"quartet_stage_drain_budget", "reader", 1024},
		{"quartet_stage_drain_budget", "writer", 1024},
	} {
		if got := counter(fams, c.name, map[string]string{"stage": c.stage}); got != c.want {
			t.Errorf("%s{stage=%q} = %v, want %v", c.name, c.stage, got, c.want)
		}
	}
	for _, name := range []string{"quartet_stage_arrival_rate", "quartet_stage_offered_rate", "quartet_stage_throughput_rate",
		"quartet_stage_queue_wait_seconds", "quartet_stage_service_time_seconds", "quartet_stage_busy_places",
		"quartet_stage_demand_places", "quartet_stage_target_places", "quartet_stage_goroutines"} {
		if find(fams, name, map[string]string{"stage": "processor"}) == nil {
			t.Errorf("%s missing", name)
		}
	}
	for _, name := range []string{"quartet_stage_loop_busy_ratio", "quartet_stage_handoffs_per_turn", "quartet_stage_turn_seconds"} {
		for _, st := range []string{"reader", "writer"} {
			if find(fams, name, map[string]string{"stage": st}) == nil {
				t.Errorf("%s{stage=%q} missing", name, st)
			}
		}
	}
	if got := counter(fams, "quartet_admission_queue_wait_target_seconds", nil); got != 0.02 {
		t.Errorf("queue-wait target %v, want 0.02", got)
	}
	if service < 0.005 {
		t.Errorf("service time %v for 10 ms handlers", service)
	}
	for _, name := range []string{"quartet_admitted_total", "quartet_admission_queued", "quartet_admission_held",
		"quartet_admission_queue_limit", "quartet_admission_service_time_seconds", "quartet_admission_late_total", "quartet_admission_gain"} {
		if find(fams, name, map[string]string{"class": "sleep"}) == nil {
			t.Errorf("%s{class=\"sleep\"} missing", name)
		}
	}
}
