package runtime

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/quartet-server/quartet/internal/fdtest"
	"github.com/quartet-server/quartet/processor"
)

// newServer builds a server on 127.0.0.1:0 that serves the built-in
// endpoints unless cfg names a handler; the test runs and stops it.
func newServer(t *testing.T, cfg Config) *Server {
	t.Helper()
	if cfg.Addr == "" && cfg.Listener == nil {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.Handler == nil {
		cfg.Handler = Builtin(nil)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// inFlight sends GET path on a fresh connection and returns a channel
// that yields the response's status and body, or the error.
func inFlight(t *testing.T, s *Server, path string) <-chan string {
	t.Helper()
	c := dial(t, s)
	if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	out := make(chan string, 1)
	go func() {
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			out <- "error: " + err.Error()
			return
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			out <- "error: " + err.Error()
			return
		}
		out <- resp.Status[:3] + " " + string(b)
	}()
	return out
}

func waitBusy(t *testing.T, s *Server, n int) {
	t.Helper()
	if !eventually(10*time.Second, func() bool { return s.Stats().Busy == n }) {
		t.Fatalf("%d handlers running, want %d", s.Stats().Busy, n)
	}
}

func waitServe(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(15 * time.Second):
		t.Fatal("Serve did not return")
		return nil
	}
}

// The README's embedding code before this test existed: one signal context
// for Serve and for Shutdown. Ctrl-C cancels it; the request in flight must
// still be answered, and Serve and Shutdown both report success.
func TestOneContextForServeAndShutdownIsGraceful(t *testing.T) {
	s := newServer(t, Config{})
	ctx, interrupt := context.WithCancel(context.Background()) // signal.NotifyContext's shape
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	resp := inFlight(t, s, "/sleep?ms=1500")
	waitBusy(t, s, 1)
	interrupt()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown with the cancelled context: %v", err)
	}
	if got := <-resp; got != "200 OK\n" {
		t.Fatalf("in-flight request got %q", got)
	}
	if err := waitServe(t, done); err != nil {
		t.Fatalf("Serve: %v", err)
	}
}

// Serve alone with a cancelled context is a graceful shutdown too: the
// in-flight request is answered, new connections are refused, and Serve
// returns nil.
func TestCancellingServeIsGraceful(t *testing.T) {
	s := newServer(t, Config{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	c := dial(t, s)
	br := bufio.NewReader(c)
	exchange(t, c, br, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n", "GET")
	resp := inFlight(t, s, "/sleep?ms=300")
	waitBusy(t, s, 1)
	cancel()
	if got := <-resp; got != "200 OK\n" {
		t.Fatalf("in-flight request got %q", got)
	}
	expectClosed(t, c, br) // idle keep-alive connection: closed by the drain
	if err := waitServe(t, done); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if c, err := net.DialTimeout("tcp", s.Addr().String(), time.Second); err == nil {
		c.Close()
		t.Fatal("still accepting after Serve returned")
	}
}

// When the grace is over, what is still running is cut off: Shutdown says
// so, Serve does not fail, and the client sees its connection close.
func TestShutdownGraceEnds(t *testing.T) {
	tests := []struct {
		name  string
		cfg   Config
		ctx   func() (context.Context, context.CancelFunc)
		force func(*Server)
	}{
		{"ShutdownTimeout", Config{ShutdownTimeout: 200 * time.Millisecond},
			func() (context.Context, context.CancelFunc) { return context.Background(), func() {} }, nil},
		{"ctx deadline", Config{},
			func() (context.Context, context.CancelFunc) {
				return context.WithTimeout(context.Background(), 200*time.Millisecond)
			}, nil},
		{"Close", Config{},
			func() (context.Context, context.CancelFunc) { return context.Background(), func() {} },
			func(s *Server) { time.Sleep(100 * time.Millisecond); s.Close() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newServer(t, tt.cfg)
			done := make(chan error, 1)
			go func() { done <- s.Serve(context.Background()) }()
			// A handler is never interrupted: the grace's end shuts its
			// connection down, and Shutdown returns when it does.
			resp := inFlight(t, s, "/sleep?ms=1500")
			waitBusy(t, s, 1)
			if tt.force != nil {
				go tt.force(s)
			}
			ctx, cancel := tt.ctx()
			defer cancel()
			err := s.Shutdown(ctx)
			if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "closing 1 connections") {
				t.Fatalf("Shutdown: %v, want the grace's end reported", err)
			}
			if got := <-resp; !strings.HasPrefix(got, "error:") {
				t.Fatalf("cut-off request got %q", got)
			}
			if err := waitServe(t, done); err != nil {
				t.Fatalf("Serve: %v", err)
			}
		})
	}
}

func TestShutdownAndCloseBeforeServe(t *testing.T) {
	fds := fdtest.Count(t)
	for _, stop := range []func(*Server) error{
		func(s *Server) error { return s.Shutdown(context.Background()) },
		func(s *Server) error { return s.Close() },
	} {
		s := newServer(t, Config{})
		if err := stop(s); err != nil {
			t.Fatal(err)
		}
		if err := s.Shutdown(context.Background()); err != nil { // again: no hang, no error
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if err := s.Serve(context.Background()); !errors.Is(err, ErrServerClosed) {
			t.Fatalf("Serve after shutdown: %v, want ErrServerClosed", err)
		}
	}
	if !eventually(2*time.Second, func() bool { return fdtest.Count(t) <= fds }) {
		t.Errorf("fds: %d before, %d after", fds, fdtest.Count(t))
	}
}

// An embedder's own listener: a test's ":0" socket, or one passed in as a
// file descriptor (systemd socket activation).
func TestServesAGivenListener(t *testing.T) {
	tests := []struct {
		name string
		ln   func(t *testing.T) net.Listener
	}{
		{"net.Listen", func(t *testing.T) net.Listener {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			return ln
		}},
		{"file descriptor", func(t *testing.T) net.Listener {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			f, err := ln.(*net.TCPListener).File() // what a socket-activated process inherits
			ln.Close()
			if err != nil {
				t.Fatal(err)
			}
			fl, err := net.FileListener(f) // duplicates f's descriptor
			f.Close()
			if err != nil {
				t.Fatal(err)
			}
			return fl
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fds := fdtest.Count(t)
			ln := tt.ln(t)
			want := ln.Addr().String()
			s := newServer(t, Config{Listener: ln})
			if got := s.Addr().String(); got != want {
				t.Fatalf("Addr %s, want the listener's %s", got, want)
			}
			if got := s.Config().Addr; got != want {
				t.Fatalf("Config().Addr %s, want %s", got, want)
			}
			done := make(chan error, 1)
			go func() { done <- s.Serve(context.Background()) }()
			resp, err := http.Get("http://" + want + "/hello")
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(b) != "Hello, World!" {
				t.Fatalf("got %q", b)
			}
			http.DefaultClient.CloseIdleConnections()
			if err := s.Shutdown(context.Background()); err != nil {
				t.Fatal(err)
			}
			if err := waitServe(t, done); err != nil {
				t.Fatal(err)
			}
			if c, err := net.DialTimeout("tcp", want, time.Second); err == nil {
				c.Close()
				t.Fatal("the given listener is still open after shutdown")
			}
			if !eventually(2*time.Second, func() bool { return fdtest.Count(t) <= fds }) {
				t.Errorf("fds: %d before, %d after", fds, fdtest.Count(t))
			}
		})
	}
}

func TestGivenListenerMustBeTCP(t *testing.T) {
	path := t.TempDir() + "/sock"
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, err = New(Config{Listener: ln})
	if err == nil || !strings.Contains(err.Error(), "not an IPv4 or IPv6 socket") {
		t.Fatalf("New with a unix listener: %v", err)
	}
	_, err = New(Config{Listener: ln, Listeners: 2})
	if !errors.Is(err, ErrBadConfig) {
		t.Fatalf("New with a Listener and 2 accept loops: %v", err)
	}
}

// An embedder that sets no handler serves nothing: in particular not the
// load-test endpoints, which would let any client pin workers (/sleep) or
// ask for a gigabyte (/bytes).
func TestNilHandlerServesNothing(t *testing.T) {
	s2, err := New(Config{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s2.Serve(context.Background()) }()
	defer func() { s2.Shutdown(context.Background()); <-done }()
	for _, path := range []string{"/hello", "/sleep?ms=4000", "/bytes?n=1000000000", "/echo"} {
		c, err := net.Dial("tcp", s2.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(c)
		resp, body := exchange(t, c, br, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n", "GET")
		c.Close()
		if resp.StatusCode != 404 || len(body) > 100 {
			t.Errorf("%s: %d with %d bytes, want a short 404", path, resp.StatusCode, len(body))
		}
	}
}

func TestReadyFollowsTheLifecycle(t *testing.T) {
	gate := make(chan struct{})
	s := newServer(t, Config{Modules: []Module{{Name: "gate", StageInit: func(StageInfo) error { <-gate; return nil }}}})
	if s.Ready() {
		t.Fatal("ready before Serve")
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(context.Background()) }()
	time.Sleep(50 * time.Millisecond)
	if s.Ready() {
		t.Fatal("ready before the stage-inits finished")
	}
	close(gate)
	if !eventually(5*time.Second, s.Ready) {
		t.Fatal("not ready after the stage-inits")
	}
	s.beginShutdown()
	if s.Ready() {
		t.Fatal("ready while shutting down")
	}
	s.Shutdown(context.Background())
	waitServe(t, done)
}

// Validate names the same field every run: the first bad one, in the
// order of Config's fields.
func TestValidateNamesTheFirstBadFieldEveryTime(t *testing.T) {
	c := Config{Readers: -1, IdleTimeout: -1, BodyTimeout: -1, WriteTimeout: -1, HighWater: -1}
	for range 50 {
		err := c.Validate()
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Field != "Readers" {
			t.Fatalf("Validate: %v, want Readers named", err)
		}
	}
	c.Readers = 0
	for range 50 {
		var ce *ConfigError
		if err := c.Validate(); !errors.As(err, &ce) || ce.Field != "IdleTimeout" {
			t.Fatalf("Validate: %v, want IdleTimeout named", err)
		}
	}
}

var _ processor.Handler = notFound{}

// Validate refuses what cannot work, naming the field, as a ConfigError
// that wraps ErrBadConfig, and takes what can.
func TestValidateRefuses(t *testing.T) {
	tests := []struct {
		name  string
		cfg   Config
		field string // "" : valid
	}{
		{"a server name that would split the response", Config{ServerName: "a\r\nX-Evil: 1"}, "ServerName"},
		{"a server name with a NUL", Config{ServerName: "a\x00b"}, "ServerName"},
		{"a server name with spaces and a tab", Config{ServerName: "my server\t1.0"}, ""},
		{"an address without a port", Config{Addr: "bogus"}, "Addr"},
		{"a port out of range", Config{Addr: "127.0.0.1:99999"}, "Addr"},
		{"a port by service name", Config{Addr: "127.0.0.1:http"}, ""},
		{"an IPv6 address", Config{Addr: "[::1]:0"}, ""},
		{"a host without an address", Config{Addr: ":8080"}, ""},
		{"a messenger address without a port", Config{MsgAddr: "127.0.0.1"}, "MsgAddr"},
		{"readers above their bound", Config{Readers: 8, ReadersMax: 2}, "Readers"},
		{"readers below their bound", Config{Readers: 4, ReadersMin: 8}, "Readers"},
		{"readers pinned", Config{Readers: 8}, ""},
		{"writers below their bound", Config{Writers: 3, WritersMin: 5}, "Writers"},
		{"writers above their bound", Config{Writers: 3, WritersMax: 2}, "Writers"},
		{"writers within their bounds", Config{Writers: 2, WritersMin: 1, WritersMax: 4}, ""},
		{"listeners by the thousand", Config{Listeners: 5000}, "Listeners"},
		{"a queue of 16 Mi entries", Config{QueueCapacity: 1 << 24}, "QueueCapacity"},
		{"a queue of 1 Mi entries", Config{QueueCapacity: 1 << 20}, ""},
		{"a header limit of a terabyte", Config{MaxHeaderBytes: 1 << 40}, "MaxHeaderBytes"},
		{"a request line limit of a terabyte", Config{MaxRequestLine: 1 << 40}, "MaxRequestLine"},
		{"a request line limit of 10 bytes", Config{MaxRequestLine: 10}, "MaxRequestLine"},
		{"a header limit of 8 bytes", Config{MaxHeaderBytes: 8}, "MaxHeaderBytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.field == "" {
				if err != nil {
					t.Fatalf("Validate: %v, want nil", err)
				}
				return
			}
			var ce *ConfigError
			if !errors.As(err, &ce) || ce.Field != tt.field || !errors.Is(err, ErrBadConfig) {
				t.Fatalf("Validate: %v, want a ConfigError naming %s", err, tt.field)
			}
			if _, err := New(tt.cfg); !errors.Is(err, ErrBadConfig) {
				t.Fatalf("New: %v, want ErrBadConfig", err)
			}
		})
	}
}

// New owns Config.Listener from the call: a New that fails, on a bad
// setting before it has touched the listener, closes it too, so that the
// caller has one rule to follow.
func TestFailedNewClosesTheGivenListener(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if _, err := New(Config{Listener: ln, Readers: -1}); !errors.Is(err, ErrBadConfig) {
		t.Fatalf("New: %v, want ErrBadConfig", err)
	}
	if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after the failed New: %v, want net.ErrClosed", err)
	}
}
