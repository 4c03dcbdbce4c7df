package processor

import (
	"log/slog"
	"os"
	"runtime"
	"time"

	"github.com/quartet-server/quartet/protocol/http1"
	"github.com/quartet-server/quartet/stages"
)

// Defaults for Config's zero fields.
const (
	// DefaultWorkersPerCPU sizes the pool when Config.Workers is 0. Handlers
	// may block, so one worker per CPU would leave CPUs idle while handlers
	// wait; four per CPU keeps them busy for handlers that wait up to about
	// three quarters of their time, and the ring absorbs bursts beyond that.
	DefaultWorkersPerCPU = 4

	// DefaultHighWater is how far a handler may get ahead of its client
	// before Write blocks: 256 KiB, enough for several round trips of a
	// fast loopback or LAN socket so that a well-behaved client never makes
	// a handler wait, small enough that 10,000 slow clients cost 2.5 GiB at
	// most rather than whatever their handlers produce.
	DefaultHighWater = 256 << 10

	// DefaultWriteTimeout bounds how long a handler blocked on back-pressure
	// waits for a client that stopped reading (took nothing at all), so
	// that it cannot hold a handler forever (a slowloris on the response
	// side); a client that reads, however slowly, keeps it waiting, and the
	// writer's minimum rate is what cuts off one that reads too slowly.
	DefaultWriteTimeout = 30 * time.Second

	// DefaultServerName is the Server header added unless a handler sets one.
	DefaultServerName = "quartet"

	// DefaultMaxParked bounds the handlers waiting on their client without
	// a place (see Places). Each holds at most HighWater of response plus a
	// chunk, and a goroutine: 4,096 of them hold about 1.1 GiB at the
	// default high-water mark in the worst case, which the minimum rates
	// (reader.DefaultMinBodyRate, writer.DefaultMinRate) keep from lasting;
	// net/http serves the slow-client trial's 500 slow readers with no
	// bound at all. Beyond it a handler waits holding its place.
	DefaultMaxParked = 4096
)

// chunkSize is the size of the pooled body buffers. 16 KiB matches the
// largest TLS record and the default socket send-buffer increment, so one
// chunk is one writev iovec that the kernel takes in one go; a small response
// (headers and body) fits in one chunk and goes out in one write(2).
const chunkSize = 16 << 10

// maxBuffered is how much body a handler may write before the header block
// is committed (and the response switches to chunked coding if it declared
// no length). Responses up to this size that do not flush get a
// Content-Length, which is what clients and caches prefer; net/http buffers
// 4 KiB, we afford more because the buffer is pooled chunks that are handed
// to the writer as they are, not copied again.
const maxBuffered = 4 * chunkSize

// Config configures a Pool. The zero value is usable: every zero field gets
// its default.
type Config struct {
	// Workers is P, the number of handlers that run at once (places),
	// when the pool starts; Pool.SetPlaces changes it while the pool runs.
	// A handler waiting on its client does not count (it is parked; see
	// MaxParked). The WorkerWaker given to New should have been made for
	// the most places the pool will have (fewer only means fewer idle
	// goroutines woken at once). 0 means DefaultWorkersPerCPU × GOMAXPROCS.
	Workers int

	// HighWater is the number of unsent response bytes above which Write
	// blocks until the writer has brought them down to LowWater.
	// 0 means DefaultHighWater; LowWater 0 means HighWater/4. The writer
	// should pass the same LowWater to Response.Sent (Pool.LowWater).
	HighWater, LowWater int64

	// WriteTimeout fails a handler waiting for its client to drain the
	// response once the client has taken nothing for this long. 0 means
	// DefaultWriteTimeout.
	WriteTimeout time.Duration

	// MaxParked bounds the handlers that wait on their client (request
	// body bytes, or back-pressure) without holding one of the Workers
	// places. 0 means DefaultMaxParked; negative means none park.
	MaxParked int

	// MaxBodyBytes is the reader's limit on a request body, which a body
	// past it fails with (stages.ErrBodyTooLarge): Adapt's handlers see
	// it as *http.MaxBytesError's Limit. 0: not told.
	MaxBodyBytes int64

	// ServerName is the value of the Server header added to responses that
	// do not set one. "" means DefaultServerName; CR, LF and NUL are sent
	// as spaces (runtime.Config.Validate refuses them).
	ServerName string

	// WorkerInit, if set, runs once for each place before it is first
	// used (index 0..Workers-1 as Run starts, then each index beyond the
	// most places the pool has had, as SetPlaces grows it); an error stops
	// Run from starting more workers and is returned once the started ones
	// finish, or stops SetPlaces short. It runs per place, not per
	// goroutine: the goroutines started later to take the place of a
	// parked handler, or a retired place's again, do not run it again.
	WorkerInit func(worker int) error

	// Logger receives handler panics (see the package's Failure). nil means a text logger on stderr,
	// made for this pool (never slog's global default).
	Logger *slog.Logger

	// Protocols are the server's protocol table, by the connection's
	// stages.ProtocolID (protocols.go): a request is served by its
	// protocol's Serve, or by the Handler for a stages.HandlerProtocol
	// (HTTP/1.1); one whose protocol has no entry is dropped and its
	// connection closed. Empty: the Handler serves every request.
	Protocols []stages.Protocol

	// Nudge, if set, is the stages.LoopNudge of the server's event loops:
	// a worker that has run for yieldCPUAfter nudges the loops that have
	// events queued before it yields, so that its yield runs them.
	Nudge *stages.LoopNudge
}

func (c Config) withDefaults() Config {
	if c.Workers <= 0 {
		c.Workers = DefaultWorkersPerCPU * runtime.GOMAXPROCS(0)
	}
	if c.HighWater <= 0 {
		c.HighWater = DefaultHighWater
	}
	if c.LowWater <= 0 || c.LowWater > c.HighWater {
		c.LowWater = c.HighWater / 4
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.MaxParked == 0 {
		c.MaxParked = DefaultMaxParked
	}
	c.MaxParked = max(c.MaxParked, 0)
	if c.ServerName == "" {
		c.ServerName = DefaultServerName
	}
	c.ServerName = http1.CleanFieldValue(c.ServerName) // it is written raw
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return c
}
