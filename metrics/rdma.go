package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/quartet-server/quartet/rdmahttp"
)

// RDMA exports the RDMA delivery module's counters (rdmahttp.Server.Stats),
// read at scrape time like the stage counters: live registrations and
// exposures (exposures and windows return to zero when idle, so a leak
// shows as a floor; MRs and QPs include the file cache's registrations
// and the cached channels),
// how deliveries ended, and where their time went. Register it on
// Metrics.Registry next to the server's own metrics.
func RDMA(stats func() rdmahttp.Stats) prometheus.Collector { return rdmaCollector(stats) }

type rdmaCollector func() rdmahttp.Stats

var (
	descRDMALive = prometheus.NewDesc("quartet_rdma_live", "RDMA resources held now, by kind (mr, mw, qp, pd: isolated channels' own, exposure).", []string{"kind"}, nil)
	descRDMAOps  = prometheus.NewDesc("quartet_rdma_deliveries_total",
		"RDMA deliveries by outcome: written (server-writes completed), exposed, confirmed and timed_out (client-reads), exposed_by_window, lost, fallback (body sent over TCP), stuck (no completion in time).",
		[]string{"outcome"}, nil)
	descRDMABytes = prometheus.NewDesc("quartet_rdma_written_bytes_total", "Body bytes delivered by server-writes.", nil, nil)
	descRDMADials = prometheus.NewDesc("quartet_rdma_dials_total", "RDMA connections the server opened to client endpoints.", nil, nil)
	descRDMACache = prometheus.NewDesc("quartet_rdma_file_cache_total", "Registration cache lookups for file bodies by result (hit, miss, copy: cached as a registered copy).", []string{"result"}, nil)
	descRDMATime  = prometheus.NewDesc("quartet_rdma_phase_seconds_total",
		"Time spent per phase, summed over responses: collect (in the processor, from EOS to the hold: mapping, digest, registration, posting), rdma (posting to completion in the writer loop), exposure (client-reads, grant to revocation).",
		[]string{"phase"}, nil)
)

func (c rdmaCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRDMALive, descRDMAOps, descRDMABytes, descRDMADials, descRDMACache, descRDMATime} {
		ch <- d
	}
}

func (c rdmaCollector) Collect(ch chan<- prometheus.Metric) {
	st := c()
	gauge := func(d *prometheus.Desc, v int64, label string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), label)
	}
	count := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge(descRDMALive, st.LiveMRs, "mr")
	gauge(descRDMALive, st.LiveMWs, "mw")
	gauge(descRDMALive, st.LiveQPs, "qp")
	gauge(descRDMALive, st.LivePDs, "pd")
	gauge(descRDMALive, st.LiveExposures, "exposure")
	for _, o := range []struct {
		name string
		n    int64
	}{
		{"written", st.Written}, {"exposed", st.Exposed}, {"confirmed", st.Confirmed},
		{"timed_out", st.TimedOut}, {"exposed_by_window", st.ExposedByWindow},
		{"lost", st.Lost}, {"fallback", st.Fallbacks}, {"stuck", st.Stuck},
	} {
		count(descRDMAOps, float64(o.n), o.name)
	}
	count(descRDMABytes, float64(st.WrittenBytes))
	count(descRDMADials, float64(st.Dials))
	count(descRDMACache, float64(st.CacheHits), "hit")
	count(descRDMACache, float64(st.CacheMisses), "miss")
	count(descRDMACache, float64(st.CacheCopies), "copy")
	count(descRDMATime, st.CollectTime.Seconds(), "collect")
	count(descRDMATime, st.RDMATime.Seconds(), "rdma")
	count(descRDMATime, st.ExposureTime.Seconds(), "exposure")
}
