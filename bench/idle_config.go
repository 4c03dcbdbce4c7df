package bench

import (
	"io"
	"net/netip"
	"time"
)

// Idle experiment bounds.
const (
	// idleIOTimeout bounds each request and response while opening the
	// idle connections. Generous: in a TCG guest with 70k connections
	// open, a server took more than 5 s to answer one.
	idleIOTimeout = 30 * time.Second
	// idleConnectTimeout bounds a connect: longer, because SYNs dropped
	// by a full accept queue are retried after 1, 3, 7, 15 s.
	idleConnectTimeout = 30 * time.Second
	// DefaultSettle is the pause before reading the server's RSS, so that
	// connections it is still setting up are counted.
	DefaultSettle = 500 * time.Millisecond
	// portsPerSource is about one ephemeral port range (32768-60999):
	// beyond it another source address is needed towards one server port.
	portsPerSource = 25000
)

// IdleConfig describes the idle-connection memory experiment.
type IdleConfig struct {
	// URL of the server; each connection sends one GET of its path, reads
	// the response and then stays open and silent.
	URL string
	// Counts of connections to measure at, ascending: connections are
	// added from one count to the next.
	Counts []int
	// PID of the server, whose VmRSS is read.
	PID int
	// RSS, if set, reads the server's memory instead of PID's VmRSS (a
	// server of several processes sums them).
	RSS func() (uint64, error)
	// SourceAddrs spread the connections over several source addresses;
	// empty means as many 127.0.0.x as the largest count needs.
	SourceAddrs []netip.Addr
	Settle      time.Duration
	// Active, if positive, is how many further keep-alive connections send
	// GET requests back to back for ActiveFor (DefaultActiveFor if 0) at
	// each step, while the idle ones are held; their latency goes in the
	// step's point.
	Active    int
	ActiveFor time.Duration
	// Log, if set, gets a line every logEvery connections opened.
	Log io.Writer
}

// logEvery is how often Idle reports the connections opened so far:
// opening 100k connections takes a while, in a VM minutes.
const logEvery = 5000

// idleServerTimeout is the keep-alive idle timeout given to the servers
// the experiment starts, longer than any run.
const idleServerTimeout = 24 * time.Hour

// idleOpeners is how many connections Idle opens at once.
const idleOpeners = 32

// IdlePoint is the server's memory with Conns idle connections open.
type IdlePoint struct {
	Conns   int     `json:"conns"`
	RSS     uint64  `json:"rss_bytes"`
	BaseRSS uint64  `json:"base_rss_bytes"`
	PerConn float64 `json:"rss_per_conn_bytes"` // (RSS - BaseRSS) / Conns
	// Partial: opening stopped short of the step's count; Conns is the
	// number actually open when RSS was read.
	Partial bool `json:"partial,omitempty"`
	// Closed counts connections the server had closed when RSS was read
	// (an idle timeout, a connection limit); PerConn divides by the rest.
	Closed int `json:"closed_by_server"`
	// OpenTime is how long opening this step's connections took (each
	// one connected, served one request, and left idle).
	OpenTime time.Duration `json:"open_ns"`
	// The active probe (IdleConfig.Active): request latency and rate of
	// the busy connections among the idle ones, and their failures.
	ActiveP50    time.Duration `json:"active_p50_ns,omitempty"`
	ActiveP99    time.Duration `json:"active_p99_ns,omitempty"`
	ActiveRate   float64       `json:"active_requests_per_sec,omitempty"`
	ActiveErrors uint64        `json:"active_errors,omitempty"`
}

// DefaultActiveFor is how long the active probe runs at each step.
const DefaultActiveFor = 10 * time.Second

func newIdlePoint(conns int, rss, base uint64) IdlePoint {
	p := IdlePoint{Conns: conns, RSS: rss, BaseRSS: base}
	if rss > base && conns > 0 {
		p.PerConn = float64(rss-base) / float64(conns)
	}
	return p
}
