// Package metrics exports a Quartet server to Prometheus with the official
// client: per-stage queue depth, hand-off counts and service-time
// histograms, connections by state, bytes sent and responses by status.
//
// Use: add m.Module() to runtime.Config.Modules, m.Attach(srv) after
// runtime.New, and serve m.Handler() as /metrics, with Live() as /healthz
// and Ready(srv) as /readyz, on a listener of their own (the runtime
// package's Example_metrics).
//
// Counts that the server already keeps (stage counters, histograms) are read
// at scrape time by a collector, so the request path pays nothing for them;
// only bytes sent and responses by status are counted per response, by a
// logger hook running in the writer, where the exact byte count is known.
package metrics

import (
	"net/http"
	"strconv"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/quartet-server/quartet/runtime"
	"github.com/quartet-server/quartet/stages"
)

// Metrics is one server's exporter.
type Metrics struct {
	reg    *prometheus.Registry
	server atomic.Pointer[runtime.Server]

	// Per response, from the writer: status codes 100..599 by index.
	byStatus  [600]atomic.Uint64
	bytesSent atomic.Uint64
	aborted   atomic.Uint64
}

// New makes an exporter with its own registry (never the global one), with
// the Go runtime and process collectors.
func New() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.reg.MustRegister((*collector)(m))
	return m
}

// Module counts responses and bytes; add it to Config.Modules.
func (m *Metrics) Module() runtime.Module {
	return runtime.Module{Name: "metrics", Logger: m.logged}
}

func (m *Metrics) logged(r *stages.Response) {
	if s := r.Status; s >= 100 && s < len(m.byStatus) {
		m.byStatus[s].Add(1)
	}
	m.bytesSent.Add(uint64(r.BytesSent))
	if r.WriteErr != nil {
		m.aborted.Add(1)
	}
}

// Attach gives the exporter the server whose stages it reports; before it,
// only the per-response counters are exported.
func (m *Metrics) Attach(s *runtime.Server) { m.server.Store(s) }

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Registry is the exporter's registry, for adding more collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

var (
	descQueueDepth = prometheus.NewDesc("quartet_stage_queue_depth", "Items waiting in the stage's hand-off queue.", []string{"stage"}, nil)
	descQueueCap   = prometheus.NewDesc("quartet_stage_queue_capacity", "Capacity of the stage's hand-off queue.", []string{"stage"}, nil)
	descEnqueued   = prometheus.NewDesc("quartet_stage_enqueued_total", "Items handed to the stage.", []string{"stage"}, nil)
	descDequeued   = prometheus.NewDesc("quartet_stage_dequeued_total", "Items the stage took from its queue (its throughput).", []string{"stage"}, nil)
	descRejected   = prometheus.NewDesc("quartet_stage_rejected_total", "Hand-offs refused because the queue was full (back-pressure).", []string{"stage"}, nil)
	descService    = prometheus.NewDesc("quartet_stage_service_seconds", "Time the stage spent on each item.", []string{"stage"}, nil)
	descLoops      = prometheus.NewDesc("quartet_stage_loops", "Event loops or workers in the stage.", []string{"stage"}, nil)
	descConns      = prometheus.NewDesc("quartet_connections", "Open connections by state.", []string{"state"}, nil)
	descAccepted   = prometheus.NewDesc("quartet_connections_accepted_total", "Connections accepted.", nil, nil)
	descPaused     = prometheus.NewDesc("quartet_listener_paused_total", "Times accepting stopped at the connection limit.", nil, nil)
	descResponses  = prometheus.NewDesc("quartet_responses_total", "Responses by status code, counted when the writer finished them.", []string{"code"}, nil)
	descBytes      = prometheus.NewDesc("quartet_sent_bytes_total", "Bytes that reached client sockets (headers and bodies).", nil, nil)
	descAborted    = prometheus.NewDesc("quartet_responses_aborted_total", "Responses cut short by a write error or timeout.", nil, nil)
)

type collector Metrics

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descQueueDepth, descQueueCap, descEnqueued, descDequeued, descRejected,
		descService, descLoops, descConns, descAccepted, descPaused, descResponses, descBytes, descAborted} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	m := (*Metrics)(c)
	for code := range m.byStatus {
		if n := m.byStatus[code].Load(); n > 0 {
			ch <- prometheus.MustNewConstMetric(descResponses, prometheus.CounterValue, float64(n), strconv.Itoa(code))
		}
	}
	ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(m.bytesSent.Load()))
	ch <- prometheus.MustNewConstMetric(descAborted, prometheus.CounterValue, float64(m.aborted.Load()))
	s := m.server.Load()
	if s == nil {
		return
	}
	st := s.Snapshot()
	for _, stage := range st.Stages() {
		name := stage.Name
		ch <- prometheus.MustNewConstMetric(descQueueDepth, prometheus.GaugeValue, float64(stage.QueueDepth), name)
		ch <- prometheus.MustNewConstMetric(descQueueCap, prometheus.GaugeValue, float64(stage.QueueCap), name)
		ch <- prometheus.MustNewConstMetric(descEnqueued, prometheus.CounterValue, float64(stage.Enqueued), name)
		ch <- prometheus.MustNewConstMetric(descDequeued, prometheus.CounterValue, float64(stage.Dequeued), name)
		ch <- prometheus.MustNewConstMetric(descRejected, prometheus.CounterValue, float64(stage.Rejected), name)
		ch <- prometheus.MustNewConstMetric(descLoops, prometheus.GaugeValue, float64(stage.Loops), name)
		count, sum, buckets := s.ServiceHistogram(runtime.Stage(name))
		ch <- prometheus.MustNewConstHistogram(descService, count, sum, buckets, name)
	}
	for state, n := range map[string]int{
		"idle": st.Conns.Idle, "reading": st.Conns.Reading, "processing": st.Conns.Processing,
		"writing": st.Conns.Out - st.Conns.Processing, "lingering": st.Conns.Lingering,
	} {
		ch <- prometheus.MustNewConstMetric(descConns, prometheus.GaugeValue, float64(max(n, 0)), state)
	}
	ch <- prometheus.MustNewConstMetric(descAccepted, prometheus.CounterValue, float64(st.Listener.Accepted))
	ch <- prometheus.MustNewConstMetric(descPaused, prometheus.CounterValue, float64(st.Listener.Paused))
}
