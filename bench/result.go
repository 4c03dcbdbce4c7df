package bench

import (
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// ErrorCounts are failures by kind. Each connect, read, write, timeout or
// parse failure closes the connection, which is then reopened.
type ErrorCounts struct {
	Connect uint64 `json:"connect"` // socket, bind or connect failed, or connect timed out
	Reset   uint64 `json:"reset"`   // read failed (reset), or the server closed with requests in flight
	Write   uint64 `json:"write"`   // write failed (reset, broken pipe)
	Timeout uint64 `json:"timeout"` // oldest request unanswered past Config.Timeout
	Parse   uint64 `json:"parse"`   // malformed or unsolicited response
	// Messenger replies that arrived but failed the check; unlike the
	// kinds above they do not close the connection.
	Reply    uint64 `json:"reply"`    // an error frame
	Mismatch uint64 `json:"mismatch"` // wrong transaction id, payload or flags
}

func (e ErrorCounts) total() uint64 {
	return e.Connect + e.Reset + e.Write + e.Timeout + e.Parse + e.Reply + e.Mismatch
}

func (e *ErrorCounts) add(o ErrorCounts) {
	e.Connect += o.Connect
	e.Reset += o.Reset
	e.Write += o.Write
	e.Timeout += o.Timeout
	e.Parse += o.Parse
	e.Reply += o.Reply
	e.Mismatch += o.Mismatch
}

func (e *ErrorCounts) sub(o ErrorCounts) {
	e.Connect -= o.Connect
	e.Reset -= o.Reset
	e.Write -= o.Write
	e.Timeout -= o.Timeout
	e.Parse -= o.Parse
	e.Reply -= o.Reply
	e.Mismatch -= o.Mismatch
}

// failures are the counts kept by when they happen rather than by request:
// a loop sets apart those of the warm-up.
type failures struct {
	errors     ErrorCounts
	reconnects uint64
	lost       uint64
}

// StatusCounts are responses by status class: [2] counts 2xx. [0] is
// unused (a status below 100 is a parse error).
type StatusCounts [6]uint64

// statusLabels name StatusCounts' classes in JSON.
var statusLabels = [6]string{"", "1xx", "2xx", "3xx", "4xx", "5xx"}

// MarshalJSON labels the classes: {"1xx": 0, "2xx": 1200, ...}.
func (s StatusCounts) MarshalJSON() ([]byte, error) {
	m := make(map[string]uint64, 5)
	for i := 1; i < len(s); i++ {
		m[statusLabels[i]] = s[i]
	}
	return json.Marshal(m)
}

// UnmarshalJSON reads what MarshalJSON writes.
func (s *StatusCounts) UnmarshalJSON(b []byte) error {
	var m map[string]uint64
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	*s = StatusCounts{}
	for k, v := range m {
		i := slices.Index(statusLabels[1:], k)
		if i < 0 {
			return fmt.Errorf("bench: unknown status class %q", k)
		}
		s[i+1] = v
	}
	return nil
}

// Counts are a loop's (or a run's) totals. Responses, bytes and status
// classes belong to requests sent after warm-up (their responses may
// arrive during the drain); errors, reconnects and lost requests to the
// time after warm-up.
type Counts struct {
	Requests     uint64       `json:"requests"` // measured responses
	BytesRead    uint64       `json:"bytes_read"`
	BytesWritten uint64       `json:"bytes_written"`
	Status       StatusCounts `json:"status"`
	// Status503 counts 503 responses (also in Status[5]): the answer of a
	// server that sheds load.
	Status503  uint64      `json:"status_503"`
	Errors     ErrorCounts `json:"errors"`
	Reconnects uint64      `json:"reconnects"`
	Lost       uint64      `json:"lost"` // requests in flight when their connection failed
	// Unanswered counts measured requests still waiting for an answer
	// (sent, or queued on an open connection) when the run ended, drain
	// included: a server that stops answering leaves them here, and in
	// no latency figure. Unsent counts, in open loop, the requests the
	// schedule called for during the measurement that never left: the
	// pipelines were full, or a reconnect skipped a backlog older than
	// the timeout. Both are requests the figures above do not answer for.
	Unanswered uint64 `json:"unanswered"`
	Unsent     uint64 `json:"unsent"`
}

// stallMin is the least silence at the end of the window that the report
// calls a stall: shorter gaps are a slow response's.
const stallMin = 100 * time.Millisecond

func (c *Counts) add(o Counts) {
	c.Requests += o.Requests
	c.BytesRead += o.BytesRead
	c.BytesWritten += o.BytesWritten
	for i := range c.Status {
		c.Status[i] += o.Status[i]
	}
	c.Status503 += o.Status503
	c.Errors.add(o.Errors)
	c.Reconnects += o.Reconnects
	c.Lost += o.Lost
	c.Unanswered += o.Unanswered
	c.Unsent += o.Unsent
}

// sub returns c - o, for the counts of an interval between two snapshots.
func (c Counts) sub(o Counts) Counts {
	c.Requests -= o.Requests
	c.BytesRead -= o.BytesRead
	c.BytesWritten -= o.BytesWritten
	for i := range c.Status {
		c.Status[i] -= o.Status[i]
	}
	c.Status503 -= o.Status503
	c.Errors.sub(o.Errors)
	c.Reconnects -= o.Reconnects
	c.Lost -= o.Lost
	c.Unanswered -= o.Unanswered
	c.Unsent -= o.Unsent
	return c
}

// Percentiles of a latency distribution.
type Percentiles struct {
	P50   time.Duration `json:"p50_ns"`
	P90   time.Duration `json:"p90_ns"`
	P99   time.Duration `json:"p99_ns"`
	P999  time.Duration `json:"p99_9_ns"`
	P9999 time.Duration `json:"p99_99_ns"`
	Max   time.Duration `json:"max_ns"`
	Mean  time.Duration `json:"mean_ns"`
}

func percentiles(h *hdrhistogram.Histogram) Percentiles {
	us := func(v int64) time.Duration { return time.Duration(v) * time.Microsecond }
	return Percentiles{
		P50: us(h.ValueAtQuantile(50)), P90: us(h.ValueAtQuantile(90)),
		P99: us(h.ValueAtQuantile(99)), P999: us(h.ValueAtQuantile(99.9)),
		P9999: us(h.ValueAtQuantile(99.99)), Max: us(h.Max()),
		Mean: time.Duration(h.Mean() * float64(time.Microsecond)),
	}
}

// Result is the outcome of one Run.
type Result struct {
	URL      string  `json:"url"`
	Mode     string  `json:"mode"` // "closed" or "open"
	Conns    int     `json:"conns"`
	Loops    int     `json:"loops"`
	Pipeline int     `json:"pipeline"`
	Rate     float64 `json:"target_rate,omitempty"`
	// Protocol is "http", or "msg" for the messenger (a msg:// URL).
	Protocol string `json:"protocol"`
	// Payload is a messenger run's request payload size in bytes (each
	// reply carries as many back); absent for HTTP runs and empty frames.
	Payload int `json:"payload,omitempty"`
	// Elapsed is the measurement window: Config.Duration (shorter if the
	// run was cancelled or failed before its end), or, in request-count
	// mode, from the first measured send to the last measured response.
	// It is not cut at the last response, which would let a server that
	// stops answering raise requests/s by shortening the window.
	Elapsed time.Duration `json:"elapsed_ns"`
	Counts
	// SilentAtEnd is how long before the end of the window the last
	// measured response came (duration mode): near 0 unless the server
	// stopped answering.
	SilentAtEnd    time.Duration `json:"silent_at_end_ns,omitempty"`
	RequestsPerSec float64       `json:"requests_per_sec"`
	BytesPerSec    float64       `json:"bytes_per_sec"` // read from the server
	// Latency is measured from the intended send time in open loop
	// (coordinated-omission corrected) and from the send in closed loop.
	Latency Percentiles `json:"latency"`
	// Uncorrected is the open-loop latency from the actual send, for
	// comparison with Latency; nil in closed loop.
	Uncorrected *Percentiles `json:"uncorrected_latency,omitempty"`
	// Shed is the latency of the 503 responses alone (how fast a shedding
	// server refuses), Answered that of the others (how long those it
	// admitted took); both nil when there was no 503.
	Shed     *Percentiles `json:"shed_latency,omitempty"`
	Answered *Percentiles `json:"answered_latency,omitempty"`
	// ShedUncorrected and AnsweredUncorrected are the same from the
	// actual send, in open loop: how long the server itself took to
	// refuse, and to answer those it admitted, without the client's own
	// backlog.
	ShedUncorrected     *Percentiles `json:"shed_uncorrected_latency,omitempty"`
	AnsweredUncorrected *Percentiles `json:"answered_uncorrected_latency,omitempty"`
	// ClientCPU is the CPU time of the generator's loop threads during
	// the measurement; ProcessCPU is the whole process's (it includes an
	// in-process server, if any, and the Go runtime).
	ClientCPU  time.Duration `json:"client_cpu_ns"`
	ProcessCPU time.Duration `json:"process_cpu_ns"`
	// ServerCPU is the server's CPU time during the measurement, when
	// known (Config.ServerPID or Config.ServerCPU).
	ServerCPU      time.Duration `json:"server_cpu_ns"`
	ServerCPUKnown bool          `json:"server_cpu_known"`
	// ServerCPUUnavailable says why the server's CPU time, asked for,
	// could not be read at the end (the process had exited).
	ServerCPUUnavailable string `json:"server_cpu_unavailable,omitempty"`
	// ServerBusy is Config.ServerBusy over the measured run.
	ServerBusy      time.Duration `json:"server_busy_ns,omitempty"`
	ServerBusyKnown bool          `json:"server_busy_known,omitempty"`
	// ServerInProcess: ProcessCPU includes the server's work.
	ServerInProcess bool `json:"server_in_process,omitempty"`
	// WarmupErrors counts the failures of the warm-up, which are in no
	// other figure.
	WarmupErrors uint64 `json:"warmup_errors"`
	// RDMA is how the replies' payloads came in a messenger run that
	// asked for them by RDMA (Config.MsgRDMA); nil in any other run.
	RDMA *RDMACounts `json:"rdma,omitempty"`

	hist *hdrhistogram.Histogram
}

func (r *Result) finish() {
	if s := r.Elapsed.Seconds(); s > 0 {
		r.RequestsPerSec = float64(r.Requests) / s
		r.BytesPerSec = float64(r.BytesRead) / s
	}
}

// Unfinished is the requests of the measurement that got no answer and
// no error: still in flight at the end, or scheduled and never sent.
func (r *Result) Unfinished() uint64 { return r.Unanswered + r.Unsent }

// Good is the measured responses that succeeded: 2xx and 3xx for HTTP
// (a redirect is the server's answer, not a failure); for the messenger,
// the replies that passed their check.
func (r *Result) Good() uint64 {
	if r.Protocol == protoMsg {
		return r.Requests - min(r.Requests, r.Errors.Reply+r.Errors.Mismatch)
	}
	return r.Status[2] + r.Status[3]
}

// Stalled reports whether the server went silent before the end of the
// window: for longer than stallMin, a tenth of the window, and (in open
// loop) two of a connection's send intervals.
func (r *Result) Stalled() bool {
	limit := max(stallMin, r.Elapsed/10)
	if r.Mode == "open" && r.Rate > 0 {
		limit = max(limit, time.Duration(2*float64(r.Conns)/r.Rate*float64(time.Second)))
	}
	return r.Elapsed > 0 && r.SilentAtEnd > limit
}

// problems is one warning line for what a sweep's log line leaves out
// (unanswered or unsent requests, a stall, a missed rate), "" if none.
func (r *Result) problems() string {
	var p []string
	if r.Stalled() {
		p = append(p, fmt.Sprintf("no response in the last %v", r.SilentAtEnd.Round(time.Millisecond)))
	}
	if r.Unfinished() > 0 {
		p = append(p, fmt.Sprintf("%d unanswered, %d never sent", r.Unanswered, r.Unsent))
	}
	if r.RateMissed() {
		p = append(p, fmt.Sprintf("target rate %.0f req/s not reached (%.1f sent)", r.Rate, r.SentPerSec()))
	}
	if len(p) == 0 {
		return ""
	}
	return "warning: " + strings.Join(p, "; ")
}

// Sent is the measured requests that left: answered, lost with their
// connection, or unanswered. An open loop's unsent ones are the rate
// warning's (RateMissed), not failures of the server.
func (r *Result) Sent() uint64 {
	return r.Requests + r.Lost + r.Unanswered
}

// FailureWarning is a line saying that most of the run's requests failed,
// or "" when most succeeded: figures of 5xx pages, refusals and resets
// are not the server's throughput, and read like it.
func (r *Result) FailureWarning() string {
	good, all := r.Good(), r.Sent()
	switch {
	case good == 0 && all == 0:
		return fmt.Sprintf("warning: no request of the measurement was sent and answered (%d errors)", r.ErrorTotal())
	case 2*good < all:
		return fmt.Sprintf("warning: %d of %d requests failed (4xx, 5xx, errors, lost, unanswered): only %d succeeded", all-good, all, good)
	}
	return ""
}

// ErrNoSuccess is returned (wrapped) by the bench command when no
// measured request got a successful response (see Result.Good): the
// result is printed, and the command exits 1.
var ErrNoSuccess = errors.New("no successful response")

// SentPerSec is, in open loop, the rate the requests actually left at
// over the window (answered, unanswered or lost with their connection),
// to hold against the target Rate.
func (r *Result) SentPerSec() float64 {
	if s := r.Elapsed.Seconds(); s > 0 {
		return float64(r.Sent()) / s
	}
	return 0
}

// RateMissed reports whether an open-loop run fell short of its target
// rate: sent more than 10% below it, or left more than 1% of its schedule
// unsent. Its corrected latencies then describe only the requests that
// made it out, not the ones the server's backlog kept back.
func (r *Result) RateMissed() bool {
	if r.Mode != "open" || r.Rate <= 0 {
		return false
	}
	scheduled := r.Sent() + r.Unsent
	return r.SentPerSec() < 0.9*r.Rate || float64(r.Unsent) > 0.01*float64(scheduled)
}

// Errors is the total of all error kinds.
func (r *Result) ErrorTotal() uint64 { return r.Errors.total() }

// ClientCPUPerRequest is the generator's CPU per measured request: the
// whole process's, the honest figure to hold against wrk's, unless the
// server shares the process; then only the loop threads'.
func (r *Result) ClientCPUPerRequest() time.Duration {
	if r.ServerInProcess {
		return perReq(r.ClientCPU, r.Requests)
	}
	return perReq(r.ProcessCPU, r.Requests)
}

// ServerCPUPerRequest is the server's CPU per measured request, or 0 when
// unknown.
func (r *Result) ServerCPUPerRequest() time.Duration {
	if !r.ServerCPUKnown {
		return 0
	}
	return perReq(r.ServerCPU, r.Requests)
}

func perReq(d time.Duration, n uint64) time.Duration {
	if n == 0 {
		return 0
	}
	return d / time.Duration(n)
}

// WriteText writes the human summary.
func (r *Result) WriteText(w io.Writer) error {
	ew := &errWriter{w: w}
	mode := "closed loop"
	if r.Mode == "open" {
		mode = fmt.Sprintf("open loop at %.0f req/s (latency corrected for coordinated omission)", r.Rate)
	}
	if r.RDMA != nil {
		ew.printf("%s: %d connections, pipeline %d, %s, replies by RDMA (%s, %s provider)\n", r.URL, r.Conns, r.Pipeline, mode, r.RDMA.Mode, r.RDMA.Provider)
	} else {
		ew.printf("%s: %d connections, %d loops, pipeline %d, %s\n", r.URL, r.Conns, r.Loops, r.Pipeline, mode)
	}
	ew.printf("  %d requests in %v, %s read\n", r.Requests, r.Elapsed.Round(time.Millisecond), byteSize(float64(r.BytesRead)))
	if w := r.FailureWarning(); w != "" {
		ew.printf("  %s\n", w)
	}
	if r.Stalled() {
		ew.printf("  warning: no response in the last %v of the %v window: the server stopped answering\n",
			r.SilentAtEnd.Round(time.Millisecond), r.Elapsed.Round(time.Millisecond))
	}
	if r.Unfinished() > 0 {
		// Up front, before any figure they are missing from.
		ew.printf("  warning: %d requests unanswered at the end (%d in flight, %d scheduled but never sent): not in the latency figures\n",
			r.Unfinished(), r.Unanswered, r.Unsent)
	}
	if r.RateMissed() {
		ew.printf("  warning: target rate %.0f req/s not reached: %.1f req/s sent; the corrected latencies leave out the requests never sent (more connections, -c, or a lower -R)\n",
			r.Rate, r.SentPerSec())
	}
	ew.printf("  requests/s: %.1f   transfer/s: %s\n", r.RequestsPerSec, byteSize(r.BytesPerSec))
	lat := func(name string, p Percentiles) {
		ew.printf("  %s p50 %v  p90 %v  p99 %v  p99.9 %v  p99.99 %v  max %v  mean %v\n", name,
			p.P50, p.P90, p.P99, p.P999, p.P9999, p.Max, p.Mean.Round(time.Microsecond))
	}
	lat("latency    ", r.Latency)
	if r.Uncorrected != nil {
		lat("uncorrected", *r.Uncorrected)
	}
	if r.Shed != nil && r.Answered != nil {
		lat("503s       ", *r.Shed)
		lat("not 503s   ", *r.Answered)
	}
	if r.ShedUncorrected != nil && r.AnsweredUncorrected != nil {
		lat("503s, sent→", *r.ShedUncorrected)
		lat("rest, sent→", *r.AnsweredUncorrected)
	}
	e := r.Errors
	if r.Protocol == protoMsg {
		// Replies have no status: each is checked against its request.
		ew.printf("  replies: %d checked, %d error frames, %d mismatched\n", r.Requests, e.Reply, e.Mismatch)
		if d := r.RDMA; d != nil {
			ew.printf("  rdma: %d by RDMA, %d fell back to TCP", d.ByRDMA, d.Fallbacks)
			if d.Fallbacks > 0 {
				ew.printf(" (%s)", d.reasons())
			}
			ew.printf(", %d asked again after a lost operation\n", d.Retried)
			if d.Fallbacks > 0 {
				ew.printf("  warning: %d of %d replies came over TCP, not by RDMA: these figures are not RDMA's alone\n", d.Fallbacks, r.Requests)
			}
		}
		ew.printf("  errors: connect %d  reset %d  write %d  timeout %d  parse %d  reply %d  mismatch %d  (lost requests %d, reconnects %d)\n",
			e.Connect, e.Reset, e.Write, e.Timeout, e.Parse, e.Reply, e.Mismatch, r.Lost, r.Reconnects)
	} else {
		ew.printf("  status: 1xx %d  2xx %d  3xx %d  4xx %d  5xx %d (503 %d)\n",
			r.Status[1], r.Status[2], r.Status[3], r.Status[4], r.Status[5], r.Status503)
		ew.printf("  errors: connect %d  reset %d  write %d  timeout %d  parse %d  (lost requests %d, reconnects %d)\n",
			e.Connect, e.Reset, e.Write, e.Timeout, e.Parse, r.Lost, r.Reconnects)
	}
	if r.WarmupErrors > 0 {
		ew.printf("  warm-up errors (not above): %d\n", r.WarmupErrors)
	}
	if r.RDMA != nil {
		// The messenger's client, not the loops, sent these requests.
		ew.printf("  client CPU: %v/request (process %v)\n", r.ClientCPUPerRequest(), r.ProcessCPU.Round(time.Millisecond))
	} else {
		ew.printf("  client CPU: %v/request (process %v, loop threads %v)\n",
			r.ClientCPUPerRequest(), r.ProcessCPU.Round(time.Millisecond), r.ClientCPU.Round(time.Millisecond))
	}
	switch {
	case r.ServerCPUKnown:
		ew.printf("  server CPU: %v/request (%v total)\n", r.ServerCPUPerRequest(), r.ServerCPU.Round(time.Millisecond))
	case r.ServerCPUUnavailable != "":
		ew.printf("  server CPU: unavailable (%s)\n", r.ServerCPUUnavailable)
	}
	return ew.err
}

// WriteJSON writes r as one indented JSON object.
func (r *Result) WriteJSON(w io.Writer) error {
	e := json.NewEncoder(w)
	e.SetIndent("", "  ")
	return e.Encode(r)
}

// CSVHeader names the columns of CSVRecord, described in README.md ("CSV
// columns"): units are in the names (_s, _us, per_sec), counts are of the
// measurement only, and a figure not known is an empty field. The CPU
// figures stay last; columns are added before them.
func CSVHeader() []string {
	return []string{"url", "mode", "conns", "loops", "pipeline", "target_rate",
		"elapsed_s", "requests", "requests_per_sec", "bytes_per_sec",
		"p50_us", "p90_us", "p99_us", "p99_9_us", "p99_99_us", "max_us", "mean_us",
		"status_2xx", "status_3xx", "status_4xx", "status_5xx", "status_503",
		"err_connect", "err_reset", "err_write", "err_timeout", "err_parse", "lost",
		"err_reply", "err_mismatch", "payload", "rdma_mode", "by_rdma", "rdma_fallbacks",
		"unanswered", "unsent",
		"client_cpu_us_per_req", "server_cpu_us_per_req"}
}

// CSVRecord is r as one row under CSVHeader.
func (r *Result) CSVRecord() []string {
	us := func(d time.Duration) string { return strconv.FormatFloat(float64(d)/1e3, 'f', 1, 64) }
	u := func(v uint64) string { return strconv.FormatUint(v, 10) }
	srv, payload := "", ""
	if r.Protocol == protoMsg {
		payload = strconv.Itoa(r.Payload)
	}
	if r.ServerCPUKnown {
		srv = us(r.ServerCPUPerRequest())
	}
	var rdmaMode, byRDMA, fallbacks string
	if d := r.RDMA; d != nil {
		rdmaMode, byRDMA, fallbacks = d.Mode, u(d.ByRDMA), u(d.Fallbacks)
	}
	return []string{r.URL, r.Mode, strconv.Itoa(r.Conns), strconv.Itoa(r.Loops), strconv.Itoa(r.Pipeline),
		strconv.FormatFloat(r.Rate, 'f', 0, 64),
		strconv.FormatFloat(r.Elapsed.Seconds(), 'f', 3, 64), u(r.Requests),
		strconv.FormatFloat(r.RequestsPerSec, 'f', 1, 64), strconv.FormatFloat(r.BytesPerSec, 'f', 0, 64),
		us(r.Latency.P50), us(r.Latency.P90), us(r.Latency.P99), us(r.Latency.P999),
		us(r.Latency.P9999), us(r.Latency.Max), us(r.Latency.Mean),
		u(r.Status[2]), u(r.Status[3]), u(r.Status[4]), u(r.Status[5]), u(r.Status503),
		u(r.Errors.Connect), u(r.Errors.Reset), u(r.Errors.Write), u(r.Errors.Timeout), u(r.Errors.Parse), u(r.Lost),
		u(r.Errors.Reply), u(r.Errors.Mismatch), payload, rdmaMode, byRDMA, fallbacks,
		u(r.Unanswered), u(r.Unsent),
		us(r.ClientCPUPerRequest()), srv}
}

// WriteCSV writes a header and r's row.
func (r *Result) WriteCSV(w io.Writer) error {
	cw := csv.NewWriter(w)
	_ = cw.Write(CSVHeader())
	_ = cw.Write(r.CSVRecord())
	cw.Flush()
	return cw.Error()
}

type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) printf(format string, args ...any) {
	if e.err == nil {
		_, e.err = fmt.Fprintf(e.w, format, args...)
	}
}

func byteSize(b float64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.2f GiB", b/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.2f MiB", b/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%.2f KiB", b/(1<<10))
	}
	return fmt.Sprintf("%.0f B", b)
}
