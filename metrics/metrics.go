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
	"golang.org/x/sys/cpu"

	"github.com/quartet-server/quartet/runtime"
	"github.com/quartet-server/quartet/stages"
)

// Metrics is one server's exporter.
type Metrics struct {
	reg    *prometheus.Registry
	server atomic.Pointer[runtime.Server]

	// Per response, from the loop that finished it, on the stripe of its
	// connection: loops on different cores count on lines of their own.
	stripes [responseStripes]responseCounts
}

// responseStripes is how many sets of response counters there are.
const responseStripes = 16

// responseCounts are one stripe's: status codes 100..599 by index, then
// the bytes and aborts. Each stripe spans many cache lines, so two never
// share one except at their edges, kept apart by the pad.
type responseCounts struct {
	byStatus  [600]atomic.Uint64
	bytesSent atomic.Uint64
	aborted   atomic.Uint64
	_         cpu.CacheLinePad
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
	var id uint64
	if r.Conn != nil {
		id = r.Conn.ID
	}
	st := &m.stripes[id%responseStripes]
	if s := r.Status; s >= 100 && s < len(st.byStatus) {
		st.byStatus[s].Add(1)
	}
	st.bytesSent.Add(uint64(r.BytesSent))
	if r.WriteErr != nil {
		st.aborted.Add(1)
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
	descQueueCap   = prometheus.NewDesc("quartet_stage_queue_capacity", "Capacity of the stage's hand-off queue; for the reader and writer stages, their loops' queues together.", []string{"stage"}, nil)
	descEnqueued   = prometheus.NewDesc("quartet_stage_enqueued_total", "Items handed to the stage.", []string{"stage"}, nil)
	descDequeued   = prometheus.NewDesc("quartet_stage_dequeued_total", "Items the stage took from its queue (its throughput).", []string{"stage"}, nil)
	descRejected   = prometheus.NewDesc("quartet_stage_rejected_total", "Hand-offs refused because the queue was full (back-pressure).", []string{"stage"}, nil)
	descService    = prometheus.NewDesc("quartet_stage_service_seconds", "Time the stage spent on each item.", []string{"stage"}, nil)
	descLoops      = prometheus.NewDesc("quartet_stage_loops", "Event loops or workers in the stage.", []string{"stage"}, nil)
	descConns      = prometheus.NewDesc("quartet_connections", "Open connections by state.", []string{"state"}, nil)
	descAccepted   = prometheus.NewDesc("quartet_connections_accepted_total", "Connections accepted.", nil, nil)
	descPaused     = prometheus.NewDesc("quartet_listener_paused_total", "Times accepting stopped at the connection limit.", nil, nil)
	descAcceptErrs = prometheus.NewDesc("quartet_listener_accept_errors_total", "Accepts that failed, most likely on a full fd table (the server logs them, and retries).", nil, nil)
	descResponses  = prometheus.NewDesc("quartet_responses_total", "Responses by status code, counted when the writer finished them.", []string{"code"}, nil)
	descBytes      = prometheus.NewDesc("quartet_sent_bytes_total", "Bytes that reached client sockets (headers and bodies).", nil, nil)
	descAborted    = prometheus.NewDesc("quartet_responses_aborted_total", "Responses cut short by a write error or timeout.", nil, nil)
	descDropped    = prometheus.NewDesc("quartet_stage_dropped_total", "Items the stage took and dropped unserved because their client had hung up.", []string{"stage"}, nil)
	descFailed     = prometheus.NewDesc("quartet_stage_failed_total", "Items whose service failed: in the processor, handlers that panicked (answered 500 or cut short; the log has the first of each place in the code, then one line every 10 s).", []string{"stage"}, nil)

	descSize    = prometheus.NewDesc("quartet_stage_size", "Loops or processor places the stage has now (what it aims at).", []string{"stage"}, nil)
	descSizeMin = prometheus.NewDesc("quartet_stage_size_min", "The lower bound the stage's controller keeps its size in.", []string{"stage"}, nil)
	descSizeMax = prometheus.NewDesc("quartet_stage_size_max", "The upper bound the stage's controller keeps its size in.", []string{"stage"}, nil)
	descAuto    = prometheus.NewDesc("quartet_stage_auto", "1 if a controller sizes the stage, 0 if its size is pinned.", []string{"stage"}, nil)
	descGoros   = prometheus.NewDesc("quartet_stage_goroutines", "The processor pool's goroutines: holding a place, parked on their client, or spare.", []string{"stage"}, nil)

	// The processor controller's inputs, over its last period.
	descArrival  = prometheus.NewDesc("quartet_stage_arrival_rate", "Requests per second admitted to the stage's queue, over the controller's last period (requests served inline on a reader loop never queue: quartet_stage_dequeued_total counts them too).", []string{"stage"}, nil)
	descOffered  = prometheus.NewDesc("quartet_stage_offered_rate", "Requests per second offered to the stage's queue, refused ones included, over the controller's last period (inline requests not counted).", []string{"stage"}, nil)
	descXput     = prometheus.NewDesc("quartet_stage_throughput_rate", "Requests per second the stage finished from its queue, over the controller's last period (inline requests not counted; rate(quartet_stage_dequeued_total) counts all).", []string{"stage"}, nil)
	descWait     = prometheus.NewDesc("quartet_stage_queue_wait_seconds", "Mean time a request finished in the controller's last period waited in the stage's queue.", []string{"stage"}, nil)
	descRun      = prometheus.NewDesc("quartet_stage_service_time_seconds", "Mean time a request holds a processor place (parked time excluded), smoothed: the controller's service time.", []string{"stage"}, nil)
	descBusy     = prometheus.NewDesc("quartet_stage_busy_places", "The controller's estimate of the places in use: the last period's throughput x the smoothed service time (Little); above the size while the service time is changing.", []string{"stage"}, nil)
	descDemand   = prometheus.NewDesc("quartet_stage_demand_places", "Places the arrivals keep busy or waiting: arrival rate x (queue wait + service time), Little's law.", []string{"stage"}, nil)
	descTarget   = prometheus.NewDesc("quartet_stage_target_places", "The controller's target: demand + 2 sqrt(demand).", []string{"stage"}, nil)
	descCeiling  = prometheus.NewDesc("quartet_stage_ceiling_places", "A growth ceiling the controller found (more places added no throughput); 0: none.", []string{"stage"}, nil)
	descWaitGoal = prometheus.NewDesc("quartet_admission_queue_wait_target_seconds", "Admission control's queue-wait target (0: admission control off).", nil, nil)

	// The reader and writer stages' controllers, over their last period.
	descLoopBusy = prometheus.NewDesc("quartet_stage_loop_busy_ratio", "Mean fraction of the controller's last period the stage's loops worked (not waiting for events): what their count is sized from.", []string{"stage"}, nil)
	descBudget   = prometheus.NewDesc("quartet_stage_drain_budget", "Hand-offs a loop of the stage takes from its queue per turn, set by the batching controller.", []string{"stage"}, nil)
	descPerTurn  = prometheus.NewDesc("quartet_stage_handoffs_per_turn", "Hand-offs the stage's loops took per turn over the controller's last period.", []string{"stage"}, nil)
	descTurnTime = prometheus.NewDesc("quartet_stage_turn_seconds", "Mean time a turn of the stage's loops worked over the controller's last period.", []string{"stage"}, nil)

	// Request classes.
	descShed      = prometheus.NewDesc("quartet_shed_total", "Requests refused with 503 and Retry-After by admission control, by request class.", []string{"class"}, nil)
	descAdmitted  = prometheus.NewDesc("quartet_admitted_total", "Requests admitted to the processors' queue, by request class.", []string{"class"}, nil)
	descClassQ    = prometheus.NewDesc("quartet_admission_queued", "Requests of the class waiting for a processor place.", []string{"class"}, nil)
	descClassHeld = prometheus.NewDesc("quartet_admission_held", "Requests of the class holding a processor place (or parked on their client).", []string{"class"}, nil)
	descLimit     = prometheus.NewDesc("quartet_admission_queue_limit", "Requests of the class admitted while fewer than this wait (-1: no limit).", []string{"class"}, nil)
	descClassRun  = prometheus.NewDesc("quartet_admission_service_time_seconds", "The class's mean time holding a place, which its queue limit is computed from.", []string{"class"}, nil)
	descLate      = prometheus.NewDesc("quartet_admission_late_total", "Requests of the class that waited for a place longer than half the queue-wait target.", []string{"class"}, nil)
	descGain      = prometheus.NewDesc("quartet_admission_gain", "The part of the class's estimated queue limit it is held to, cut while its requests are late (1: the estimate).", []string{"class"}, nil)

	descParked      = prometheus.NewDesc("quartet_handlers_parked", "Handlers waiting on their client (request body bytes, or the client reading) without holding a processor place.", nil, nil)
	descParkedMax   = prometheus.NewDesc("quartet_handlers_parked_max", "The bound on parked handlers (Config.MaxParked).", nil, nil)
	descParkRefused = prometheus.NewDesc("quartet_handlers_park_refused_total", "Waits on a client that held a processor place because the parked handlers were at their bound.", nil, nil)
	descClientLimit = prometheus.NewDesc("quartet_client_limit", "The slow-client limits in force, defaults applied (0: off): preread_body_bytes, min_body_rate_bytes_per_second, min_body_rate_grace_seconds, min_response_rate_bytes_per_second, min_response_rate_grace_seconds.", []string{"setting"}, nil)
	descCutOff      = prometheus.NewDesc("quartet_clients_cut_off_total", "Clients cut off for being too slow: slow_header (a request partly received at the header timeout), slow_body (request body below the minimum rate), slow_reader (response below the minimum rate), write_timeout (took nothing for the write timeout).", []string{"reason"}, nil)
	descResets      = prometheus.NewDesc("quartet_connections_reset_total", "Connections closed with RST so that the kernel drops the data still queued for them.", nil, nil)
	descNudges      = prometheus.NewDesc("quartet_loop_nudges_total", "Times a worker about to yield readied event loops that Go's scheduler had left parked with events queued (CPU-bound workers).", nil, nil)
	descLoopAwaits  = prometheus.NewDesc("quartet_loop_awaits_total", "Times a worker about to take a request stepped aside for an event loop readied behind the workers in the run queue, with events queued.", nil, nil)
	descBatched     = prometheus.NewDesc("quartet_io_batched_total", "Reads (op=read) and whole responses (op=send) a loop made with others of its turn in one io_uring_enter.", []string{"op"}, nil)
	descBatches     = prometheus.NewDesc("quartet_io_batches_total", "The io_uring_enter calls that made them: batched / batches is the operations one system call made.", []string{"op"}, nil)
	descHangUps     = prometheus.NewDesc("quartet_connections_hung_up_total", "Clients that hung up while their request was queued or its handler was running.", nil, nil)
)

type collector Metrics

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descQueueDepth, descQueueCap, descEnqueued, descDequeued, descRejected,
		descService, descLoops, descConns, descAccepted, descPaused, descAcceptErrs, descResponses, descBytes, descAborted, descDropped, descFailed,
		descParked, descParkedMax, descParkRefused, descClientLimit, descCutOff, descResets, descHangUps, descNudges, descLoopAwaits,
		descBatched, descBatches,
		descSize, descSizeMin, descSizeMax, descAuto, descGoros,
		descArrival, descOffered, descXput, descWait, descRun, descBusy, descDemand, descTarget, descCeiling, descWaitGoal,
		descLoopBusy, descBudget, descPerTurn, descTurnTime,
		descShed, descAdmitted, descClassQ, descClassHeld, descLimit, descClassRun, descLate, descGain} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	m := (*Metrics)(c)
	var bytes, aborted uint64
	for i := range m.stripes {
		bytes += m.stripes[i].bytesSent.Load()
		aborted += m.stripes[i].aborted.Load()
	}
	for code := range m.stripes[0].byStatus {
		var n uint64
		for i := range m.stripes {
			n += m.stripes[i].byStatus[code].Load()
		}
		if n > 0 {
			ch <- prometheus.MustNewConstMetric(descResponses, prometheus.CounterValue, float64(n), strconv.Itoa(code))
		}
	}
	ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(bytes))
	ch <- prometheus.MustNewConstMetric(descAborted, prometheus.CounterValue, float64(aborted))
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
		ch <- prometheus.MustNewConstMetric(descDropped, prometheus.CounterValue, float64(stage.Dropped), name)
		ch <- prometheus.MustNewConstMetric(descFailed, prometheus.CounterValue, float64(stage.Failed), name)
		ch <- prometheus.MustNewConstMetric(descLoops, prometheus.GaugeValue, float64(stage.Loops), name)
		count, sum, buckets := s.ServiceHistogram(runtime.Stage(name))
		ch <- prometheus.MustNewConstHistogram(descService, count, sum, buckets, name)
	}
	for _, c := range []struct {
		state string
		n     int
	}{
		{"idle", st.Conns.Idle}, {"reading", st.Conns.Reading}, {"queued", st.Conns.Queued},
		{"processing", st.Conns.Processing}, {"parked", st.Conns.Parked}, {"writing", st.Conns.Writing},
		{"lingering", st.Conns.Lingering},
	} {
		ch <- prometheus.MustNewConstMetric(descConns, prometheus.GaugeValue, float64(c.n), c.state)
	}
	collectControl(ch, st)
	sl := st.Slow
	ch <- prometheus.MustNewConstMetric(descParked, prometheus.GaugeValue, float64(sl.Parked))
	ch <- prometheus.MustNewConstMetric(descParkedMax, prometheus.GaugeValue, float64(sl.MaxParked))
	ch <- prometheus.MustNewConstMetric(descParkRefused, prometheus.CounterValue, float64(sl.ParkRefused))
	ch <- prometheus.MustNewConstMetric(descNudges, prometheus.CounterValue, float64(st.LoopNudges))
	ch <- prometheus.MustNewConstMetric(descLoopAwaits, prometheus.CounterValue, float64(st.LoopAwaits))
	ch <- prometheus.MustNewConstMetric(descBatched, prometheus.CounterValue, float64(st.BatchedReads), "read")
	ch <- prometheus.MustNewConstMetric(descBatches, prometheus.CounterValue, float64(st.ReadBatches), "read")
	ch <- prometheus.MustNewConstMetric(descBatched, prometheus.CounterValue, float64(st.Batched), "send")
	ch <- prometheus.MustNewConstMetric(descBatches, prometheus.CounterValue, float64(st.SendBatches), "send")
	for _, l := range []struct {
		setting string
		v       float64
	}{
		{"preread_body_bytes", float64(sl.PrereadBody)},
		{"min_body_rate_bytes_per_second", float64(sl.MinBodyRate)},
		{"min_body_rate_grace_seconds", sl.MinBodyRateGrace.Seconds()},
		{"min_response_rate_bytes_per_second", float64(sl.MinResponseRate)},
		{"min_response_rate_grace_seconds", sl.MinResponseRateGrace.Seconds()},
	} {
		ch <- prometheus.MustNewConstMetric(descClientLimit, prometheus.GaugeValue, l.v, l.setting)
	}
	ch <- prometheus.MustNewConstMetric(descCutOff, prometheus.CounterValue, float64(sl.SlowHeaders), "slow_header")
	ch <- prometheus.MustNewConstMetric(descCutOff, prometheus.CounterValue, float64(sl.SlowBodies), "slow_body")
	ch <- prometheus.MustNewConstMetric(descCutOff, prometheus.CounterValue, float64(sl.SlowReaders), "slow_reader")
	ch <- prometheus.MustNewConstMetric(descCutOff, prometheus.CounterValue, float64(sl.TimedOut), "write_timeout")
	ch <- prometheus.MustNewConstMetric(descResets, prometheus.CounterValue, float64(sl.Resets))
	ch <- prometheus.MustNewConstMetric(descHangUps, prometheus.CounterValue, float64(sl.HangUps))
	ch <- prometheus.MustNewConstMetric(descAccepted, prometheus.CounterValue, float64(st.Listener.Accepted))
	ch <- prometheus.MustNewConstMetric(descPaused, prometheus.CounterValue, float64(st.Listener.Paused))
	ch <- prometheus.MustNewConstMetric(descAcceptErrs, prometheus.CounterValue, float64(st.Listener.Errors))
}

// collectControl exports the stage sizes, the controller's inputs and the
// request classes.
func collectControl(ch chan<- prometheus.Metric, st runtime.Stats) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, z := range st.Sizes {
		name := string(z.Stage)
		gauge(descSize, float64(z.Size), name)
		gauge(descSizeMin, float64(z.Min), name)
		gauge(descSizeMax, float64(z.Max), name)
		auto := 0.0
		if z.Auto {
			auto = 1
		}
		gauge(descAuto, auto, name)
	}
	p := string(runtime.StageProcessor)
	c := st.Control
	gauge(descGoros, float64(st.ProcessorGoroutines), p)
	gauge(descArrival, c.ArrivalRate, p)
	gauge(descOffered, c.Offered, p)
	gauge(descXput, c.Throughput, p)
	gauge(descWait, c.QueueWait.Seconds(), p)
	gauge(descRun, c.Service.Seconds(), p)
	gauge(descBusy, c.Busy, p)
	gauge(descDemand, c.Demand, p)
	gauge(descTarget, float64(c.Target), p)
	gauge(descCeiling, float64(c.Ceiling), p)
	gauge(descWaitGoal, c.WaitTarget.Seconds())
	for _, l := range c.Loops {
		name := string(l.Stage)
		gauge(descLoopBusy, l.Load, name)
		gauge(descBudget, float64(l.Budget), name)
		gauge(descPerTurn, l.PerTurn, name)
		gauge(descTurnTime, l.TurnTime.Seconds(), name)
	}
	for _, k := range c.Classes {
		ch <- prometheus.MustNewConstMetric(descShed, prometheus.CounterValue, float64(k.Shed), k.Name)
		ch <- prometheus.MustNewConstMetric(descAdmitted, prometheus.CounterValue, float64(k.Admitted), k.Name)
		gauge(descClassQ, float64(k.Queued), k.Name)
		gauge(descClassHeld, float64(k.Held), k.Name)
		gauge(descLimit, float64(k.Limit), k.Name)
		gauge(descClassRun, k.Service.Seconds(), k.Name)
		ch <- prometheus.MustNewConstMetric(descLate, prometheus.CounterValue, float64(k.Late), k.Name)
		gauge(descGain, k.Gain, k.Name)
	}
}
