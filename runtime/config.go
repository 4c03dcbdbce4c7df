package runtime

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	goruntime "runtime"
	"time"

	"github.com/quartet-server/quartet/processor"
	"github.com/quartet-server/quartet/reader"
	"github.com/quartet-server/quartet/stages"
)

// Config is everything a Server is built from. Every stage size is here so
// load experiments can sweep it; zero values take the defaults below.
type Config struct {
	Addr      string // listen address, host:port (port 0 picks one)
	Listeners int    // accept loops; more than one uses SO_REUSEPORT
	ReusePort bool   // SO_REUSEPORT even with one accept loop

	Readers    int // R reader event loops
	Processors int // P handler workers
	Writers    int // W writer event loops

	// QueueCapacity sizes each hand-off queue: reader→processor, and the
	// inbound queue of every reader and writer loop.
	QueueCapacity int

	MaxConns       int   // open connections at most; 0: no limit
	MaxHeaderBytes int   // header block limit (431)
	MaxRequestLine int   // request line limit (414)
	MaxHeaders     int   // header field count limit (431)
	MaxBodyBytes   int64 // request body limit (413)

	HeaderTimeout time.Duration // first byte to end of header block (408)
	IdleTimeout   time.Duration // keep-alive wait for the next request
	BodyTimeout   time.Duration // a handler waiting this long for body bytes fails
	WriteTimeout  time.Duration // a client that reads nothing this long is dropped
	LingerTimeout time.Duration // lingering close: wait for the client's FIN

	HighWater int64 // unsent bytes per response before its handler waits

	ServerName string

	// Handler runs every request. nil serves the built-in endpoints only.
	Handler processor.Handler
	// Log runs in the writer after each response's last byte (or abort),
	// with the exact bytes sent. nil logs nothing.
	Log func(*stages.Response)
	// Logger receives server events (handler panics, loop failures).
	Logger *slog.Logger

	// Modules plug features in through hooks, in this order.
	Modules []Module
}

// DefaultConfig sizes the stages for this machine: a reader and a writer
// loop per two CPUs (each loop serves thousands of connections; more loops
// than CPUs only adds wake-ups), and four handler workers per CPU, since
// handlers may block.
func DefaultConfig() Config {
	cpus := goruntime.GOMAXPROCS(0)
	loops := max(1, cpus/2)
	return Config{
		Addr:          "127.0.0.1:8080",
		Listeners:     1,
		Readers:       loops,
		Processors:    processor.DefaultWorkersPerCPU * cpus,
		Writers:       loops,
		QueueCapacity: 4096,
		MaxConns:      0,
		MaxBodyBytes:  reader.DefaultMaxBodyBytes,
		HeaderTimeout: reader.DefaultHeaderTimeout,
		IdleTimeout:   reader.DefaultIdleTimeout,
		BodyTimeout:   reader.DefaultBodyTimeout,
		WriteTimeout:  processor.DefaultWriteTimeout,
		LingerTimeout: reader.DefaultLingerTimeout,
		HighWater:     processor.DefaultHighWater,
		ServerName:    processor.DefaultServerName,
	}
}

// ErrBadConfig is wrapped by every error Validate returns.
var ErrBadConfig = errors.New("quartet: bad config")

// Validate reports the first setting that cannot work, naming it.
func (c *Config) Validate() error {
	bad := func(name string, v any, why string) error {
		return fmt.Errorf("%w: %s = %v: %s", ErrBadConfig, name, v, why)
	}
	switch {
	case c.Addr == "":
		return bad("Addr", `""`, "need host:port")
	case c.Listeners < 0:
		return bad("Listeners", c.Listeners, "must be >= 0")
	case c.Readers < 0 || c.Readers > 1024:
		return bad("Readers", c.Readers, "must be 0..1024")
	case c.Processors < 0 || c.Processors > 1<<16:
		return bad("Processors", c.Processors, "must be 0..65536")
	case c.Writers < 0 || c.Writers > 1024:
		return bad("Writers", c.Writers, "must be 0..1024")
	case c.QueueCapacity < 0 || c.QueueCapacity > 1<<24:
		return bad("QueueCapacity", c.QueueCapacity, "must be 0..16777216")
	case c.MaxConns < 0:
		return bad("MaxConns", c.MaxConns, "must be >= 0")
	case c.MaxBodyBytes < 0:
		return bad("MaxBodyBytes", c.MaxBodyBytes, "must be >= 0")
	case c.HighWater < 0:
		return bad("HighWater", c.HighWater, "must be >= 0")
	}
	for name, d := range map[string]time.Duration{
		"HeaderTimeout": c.HeaderTimeout, "IdleTimeout": c.IdleTimeout, "BodyTimeout": c.BodyTimeout,
		"WriteTimeout": c.WriteTimeout, "LingerTimeout": c.LingerTimeout,
	} {
		if d < 0 {
			return bad(name, d, "must be >= 0")
		}
	}
	return nil
}

// withDefaults fills zero fields from DefaultConfig.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Listeners == 0 {
		c.Listeners = d.Listeners
	}
	if c.Readers == 0 {
		c.Readers = d.Readers
	}
	if c.Processors == 0 {
		c.Processors = d.Processors
	}
	if c.Writers == 0 {
		c.Writers = d.Writers
	}
	if c.QueueCapacity == 0 {
		c.QueueCapacity = d.QueueCapacity
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	if c.ServerName == "" {
		c.ServerName = d.ServerName
	}
	if c.Handler == nil {
		c.Handler = Builtin(nil)
	}
	return c
}
