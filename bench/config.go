package bench

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/quartet-server/quartet/protocol/msg"
	"github.com/quartet-server/quartet/rdma/deliver"
)

// Defaults for Config fields left at their zero value.
const (
	// DefaultConns is wrk's default connection count.
	DefaultConns = 10
	// DefaultDuration applies when neither Duration nor Requests is set.
	DefaultDuration = 10 * time.Second
	// DefaultTimeout is how long a request may stay unanswered before its
	// connection is counted as timed out and reopened; wrk uses 2 s too.
	DefaultTimeout = 2 * time.Second
	// maxPipeline bounds Config.Pipeline: deeper pipelines only measure the
	// server's socket buffers.
	maxPipeline = 256
	// drainGrace bounds how long in-flight requests are awaited once the
	// measurement window is over.
	drainGrace = time.Second
)

// Errors returned by Config.validate (through Run).
var (
	// ErrNoTarget is returned when Config.URL is empty.
	ErrNoTarget = errors.New("bench: no target URL")
	// ErrBadScheme is returned for a URL that is not plain http://.
	ErrBadScheme = errors.New("bench: only http:// targets are supported")
)

// RequestSpec is one entry of a request mix. Requests are serialised once,
// before the run, into the exact bytes written on the wire.
type RequestSpec struct {
	Method   string            `yaml:"method" json:"method,omitempty"`
	Path     string            `yaml:"path" json:"path"`
	BodySize int               `yaml:"body_size" json:"body_size,omitempty"`
	Headers  map[string]string `yaml:"headers" json:"headers,omitempty"`
	// Weight is the relative frequency of this entry in the mix (default 1).
	Weight int `yaml:"weight" json:"weight,omitempty"`
}

// Config describes one load run.
type Config struct {
	// URL is the target, http://host:port/path; its path is the request path
	// when Mix is empty. msg://host:port is a messenger server
	// (protocol/msg) with the echo dispatcher instead: each request is a
	// frame of Payload bytes, and each reply must carry them back.
	URL string
	// Payload is the request payload size in bytes for a msg:// target
	// (0 sends empty frames); HTTP targets use Mix.
	Payload int
	// MsgRDMA, for a msg:// target, asks for every reply's payload by
	// RDMA in this mode (server-writes, client-reads) into registered
	// memory of an endpoint on the RDMA provider MsgProvider names
	// (rdmatool's registry: soft, verbs; "" or auto picks), through
	// msgclient; Result.RDMA counts the replies that came inline instead.
	// Such a run is closed loop, with Pipeline requests in flight on each
	// connection. ModeOff (the zero value) sends plain frames.
	MsgRDMA     deliver.Mode
	MsgProvider string
	// Conns is the number of keep-alive connections (DefaultConns if 0).
	Conns int
	// Loops is the number of event loops (threads); 0 means min(2, Conns).
	Loops int
	// Duration of the measurement window, after Warmup. Ignored when
	// Requests is set.
	Duration time.Duration
	// Requests, when positive, ends the run after exactly this many
	// responses (warm-up responses excluded).
	Requests int64
	// Warmup is run before measuring; its responses are not recorded.
	Warmup time.Duration
	// Rate, when positive, selects open-loop mode at this many requests per
	// second in total, with coordinated-omission correction.
	Rate float64
	// Pipeline is the number of requests kept in flight per connection
	// (1 if 0).
	Pipeline int
	// Timeout per request (DefaultTimeout if 0, negative disables).
	Timeout time.Duration
	// Mix of requests; each connection cycles through it in weighted
	// round-robin order. Empty means GET of the URL's path.
	Mix []RequestSpec
	// SourceAddrs, if set, are bound round-robin as connection source
	// addresses so that more than ~28k connections (one ephemeral port range)
	// can reach one server port, e.g. 127.0.0.1..127.0.0.8.
	SourceAddrs []netip.Addr
	// ServerPID, if positive, is sampled from /proc for server CPU time.
	ServerPID int
	// ServerCPU, if set, reports the server's cumulative CPU time; it
	// takes precedence over ServerPID.
	ServerCPU func() time.Duration
	// ServerBusy, if set, reports the cumulative busy time of the CPUs
	// the server has to itself (CoreBusy), sampled as ServerCPU is.
	ServerBusy func() time.Duration
	// ServerInProcess: the server runs in this process, so its CPU time is
	// the process's minus the generator's loop threads (an estimate: the
	// Go runtime's own work, GC included, is charged to the server).
	ServerInProcess bool
	// Progress, if set, is called about every ProgressEvery from a
	// goroutine of Run's own.
	Progress      func(Progress)
	ProgressEvery time.Duration
	// Interval, if positive, splits the run into intervals of this length
	// counted from IntervalBase (the run's start if zero), and OnInterval
	// gets each one's figures in order, from a goroutine of Run's own, as
	// soon as every loop has passed it (within a tick). Runs that share an
	// IntervalBase, one after another, sample on one time line: the phases
	// of an experiment.
	Interval     time.Duration
	IntervalBase time.Time
	OnInterval   func(IntervalSample)
}

// target is the parsed URL.
type target struct {
	addr netip.AddrPort
	host string // Host header value
	path string
	msg  bool // msg://: the messenger, not HTTP
}

// msgScheme starts a messenger target's URL.
const msgScheme = "msg://"

// IsMsgTarget reports whether raw names a messenger server (msg://).
func IsMsgTarget(raw string) bool { return strings.HasPrefix(raw, msgScheme) }

// parseRunTarget is parseTarget for a load run, which also speaks the
// messenger: msg://host:port, no path. Other commands (idle, compare)
// speak HTTP only and keep parseTarget.
func parseRunTarget(raw string) (target, error) {
	if !IsMsgTarget(raw) {
		return parseTarget(raw)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return target{}, fmt.Errorf("bench: target: %w", err)
	}
	if u.Port() == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		return target{}, fmt.Errorf("bench: messenger target %q: want msg://HOST:PORT", raw)
	}
	// The HTTP parser's checks (port range, an IP address) apply as they
	// are to the same host and port.
	t, err := parseTarget("http://" + u.Host)
	if err != nil {
		return target{}, err
	}
	t.msg, t.path = true, ""
	return t, nil
}

func parseTarget(raw string) (target, error) {
	if raw == "" {
		return target{}, ErrNoTarget
	}
	u, err := url.Parse(raw)
	if err != nil {
		return target{}, fmt.Errorf("bench: target: %w", err)
	}
	if u.Scheme != "http" {
		return target{}, fmt.Errorf("%w: %q", ErrBadScheme, raw)
	}
	port := u.Port()
	if port == "" {
		port = "80"
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return target{}, fmt.Errorf("bench: target port %q: %w", port, err)
	}
	host := u.Hostname()
	if host == "localhost" {
		host = "127.0.0.1"
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		// Name resolution would hide a DNS dependency inside a benchmark;
		// ask for an address instead.
		return target{}, fmt.Errorf("bench: target host %q must be an IP address: %w", host, err)
	}
	path := u.RequestURI()
	if path == "" {
		path = "/"
	}
	return target{addr: netip.AddrPortFrom(a.Unmap(), uint16(p)), host: u.Host, path: path}, nil
}

// withDefaults returns a copy of c with zero fields defaulted.
func (c Config) withDefaults() Config {
	if c.Conns <= 0 {
		c.Conns = DefaultConns
	}
	if c.Loops <= 0 {
		c.Loops = min(2, c.Conns)
	}
	c.Loops = min(c.Loops, c.Conns)
	if c.Pipeline <= 0 {
		c.Pipeline = 1
	}
	if c.Duration <= 0 && c.Requests <= 0 {
		c.Duration = DefaultDuration
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.ProgressEvery <= 0 {
		c.ProgressEvery = time.Second
	}
	return c
}

// checkSigns refuses negative counts and durations before withDefaults
// could read them as "the default": a negative Warmup plus Duration left
// measureEnd at or below zero, which means "no end", and the run went on
// until ctx expired. It runs on the Config as the caller gave it.
func (c Config) checkSigns() error {
	switch {
	case c.Duration < 0:
		return fmt.Errorf("bench: Duration %v: want 0 (the default) or more", c.Duration)
	case c.Warmup < 0:
		return fmt.Errorf("bench: Warmup %v: want 0 (none) or more", c.Warmup)
	case c.Requests < 0:
		return fmt.Errorf("bench: Requests %d: want 0 (run for Duration) or more", c.Requests)
	case c.Conns < 0:
		return fmt.Errorf("bench: Conns %d: want 0 (the default) or more", c.Conns)
	case c.Loops < 0:
		return fmt.Errorf("bench: Loops %d: want 0 (the default) or more", c.Loops)
	case c.Pipeline < 0:
		return fmt.Errorf("bench: Pipeline %d: want 0 (the default) or more", c.Pipeline)
	}
	return nil
}

func (c Config) validate() error {
	if c.Pipeline > maxPipeline {
		return fmt.Errorf("bench: pipeline depth %d above %d", c.Pipeline, maxPipeline)
	}
	if c.Rate < 0 {
		return fmt.Errorf("bench: negative rate %v", c.Rate)
	}
	if c.Interval < 0 || c.Interval > 0 && c.Interval < tick {
		return fmt.Errorf("bench: interval %v: want at least %v", c.Interval, tick)
	}
	if IsMsgTarget(c.URL) {
		if len(c.Mix) > 0 {
			return fmt.Errorf("bench: %s: a messenger target takes a payload size, not a request mix", c.URL)
		}
		if c.Payload < 0 || c.Payload > msg.DefaultMaxPayload {
			return fmt.Errorf("bench: payload of %d bytes: want 0 to %d", c.Payload, msg.DefaultMaxPayload)
		}
	}
	if err := c.checkMsgRDMA(); err != nil {
		return err
	}
	for _, m := range c.Mix {
		if m.Weight < 0 || m.BodySize < 0 {
			return fmt.Errorf("bench: mix entry %s %s: negative weight or body size", m.Method, m.Path)
		}
		if m.Path != "" && !strings.HasPrefix(m.Path, "/") {
			return fmt.Errorf("bench: mix path %q must start with /", m.Path)
		}
	}
	return nil
}

// Progress is a snapshot handed to Config.Progress.
type Progress struct {
	Elapsed  time.Duration // since the start, warm-up included
	Requests uint64        // measured responses so far
	Errors   uint64
	Rate     float64 // responses/s over the last interval
	Warmup   bool    // still warming up
}
