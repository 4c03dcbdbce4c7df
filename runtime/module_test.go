//go:build linux

package runtime

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/quartet-server/quartet/processor"
	"github.com/quartet-server/quartet/stages"
	"github.com/quartet-server/quartet/writer"
)

// deferModule holds each response at a point until an eventfd completion
// source fires in the response's writer loop, as an RDMA module holds the
// HTTP response until its RDMA write completes. It uses only the public
// module API.
type deferModule struct {
	mu      sync.Mutex
	loops   map[int]*deferLoop
	fired   atomic.Int64 // callbacks run
	inLoop  atomic.Int64 // callbacks that found their hold queued by that same loop's index
	cleaned atomic.Int64 // connection clean-ups run
	exited  atomic.Int64 // writer loops that ran the module's StageExit
	exitErr atomic.Value // RemoveSource's error in StageExit, if any
}

type deferLoop struct {
	efd     int
	id      writer.SourceID
	pending chan *stages.Hold
}

func (m *deferModule) module() Module {
	return Module{
		Name: "defer",
		StageInit: func(info StageInfo) error {
			if info.Stage != StageWriter {
				return nil
			}
			efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
			if err != nil {
				return err
			}
			dl := &deferLoop{efd: efd, pending: make(chan *stages.Hold, 64)}
			m.mu.Lock()
			m.loops[info.Index] = dl
			m.mu.Unlock()
			dl.id, err = info.Sources.AddSource(efd, func() {
				var buf [8]byte
				unix.Read(efd, buf[:]) // consume the completion
				m.fired.Add(1)
				for {
					select {
					case h := <-dl.pending:
						m.inLoop.Add(1)
						h.Release()
					default:
						return
					}
				}
			})
			return err
		},
		StageExit: func(info StageInfo) {
			if info.Stage != StageWriter {
				return
			}
			m.mu.Lock()
			dl := m.loops[info.Index]
			m.mu.Unlock()
			if err := info.Sources.RemoveSource(dl.id); err != nil {
				m.exitErr.Store(err.Error())
			}
			m.exited.Add(1)
		},
		PreConnection: func(c *stages.Conn) error {
			c.SetValue(0, "seen by pre-connection")
			c.OnClose(func() { m.cleaned.Add(1) })
			return nil
		},
		Handler: func(next processor.Handler) processor.Handler {
			return processor.HandlerFunc(func(w *processor.ResponseWriter, r *stages.Request) {
				if string(r.Path) != "/deferred" {
					next.ServeQuartet(w, r)
					return
				}
				if r.Conn.Value(0) != "seen by pre-connection" {
					w.WriteHeader(500)
					return
				}
				w.Header().Set("Content-Length", "10")
				w.WriteString("before|")
				w.Flush()
				h := w.Hold()
				m.mu.Lock()
				dl := m.loops[r.Conn.Writer]
				m.mu.Unlock()
				dl.pending <- h
				w.WriteString("aft") // queued behind the hold
				// The "completion" arrives later, from elsewhere.
				time.AfterFunc(150*time.Millisecond, func() {
					var one [8]byte
					binary.NativeEndian.PutUint64(one[:], 1)
					unix.Write(dl.efd, one[:])
				})
			})
		},
	}
}

func TestModuleDefersResponseUntilCompletionSourceFires(t *testing.T) {
	m := &deferModule{loops: map[int]*deferLoop{}}
	t.Cleanup(func() {
		// Runs after the server's shutdown (registered before it).
		if m.exited.Load() != 2 || m.exitErr.Load() != nil {
			t.Errorf("StageExit ran in %d of 2 writer loops (error %v)", m.exited.Load(), m.exitErr.Load())
		}
		for _, dl := range m.loops {
			unix.Close(dl.efd)
		}
	})
	s := startServer(t, Config{Writers: 2, Modules: []Module{m.module()}})
	c := dial(t, s)
	br := bufio.NewReader(c)
	start := time.Now()
	io.WriteString(c, "GET /deferred HTTP/1.1\r\nHost: x\r\n\r\n")
	// The header and the part before the hold arrive at once...
	var head strings.Builder
	for !strings.HasSuffix(head.String(), "before|") {
		b, err := br.ReadByte()
		if err != nil {
			t.Fatalf("reading up to the hold: %v (got %q)", err, head.String())
		}
		head.WriteByte(b)
	}
	if d := time.Since(start); d > 120*time.Millisecond {
		t.Logf("bytes before the hold took %v (loaded machine?)", d)
	}
	// ...the rest only after the completion source ran in the writer loop.
	rest := make([]byte, 3)
	if _, err := io.ReadFull(br, rest); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 140*time.Millisecond {
		t.Fatalf("bytes after the hold arrived after %v, before the completion fired", d)
	}
	if string(rest) != "aft" || m.fired.Load() != 1 || m.inLoop.Load() != 1 {
		t.Fatalf("rest %q, callbacks %d, releases %d", rest, m.fired.Load(), m.inLoop.Load())
	}
	c.Close()
	if !eventually(5*time.Second, func() bool { return m.cleaned.Load() == 1 }) {
		t.Fatalf("connection clean-up ran %d times, want 1", m.cleaned.Load())
	}
}

func TestModuleHooksRunInOrder(t *testing.T) {
	var order []string
	var mu sync.Mutex
	note := func(s string) {
		mu.Lock()
		order = append(order, s)
		mu.Unlock()
	}
	mk := func(name string) Module {
		return Module{
			Name:       name,
			PostConfig: func(*Config) error { note(name + ".post-config"); return nil },
			StageInit: func(info StageInfo) error {
				if info.Stage == StageProcessor && info.Index == 0 {
					note(name + ".processor-init")
				}
				return nil
			},
			Handler: func(next processor.Handler) processor.Handler {
				return processor.HandlerFunc(func(w *processor.ResponseWriter, r *stages.Request) {
					note(name + ".handler")
					next.ServeQuartet(w, r)
				})
			},
			Logger: func(r *stages.Response) { note(name + ".logger") },
		}
	}
	s := startServer(t, Config{Modules: []Module{mk("a"), mk("b")}})
	c := dial(t, s)
	exchange(t, c, bufio.NewReader(c), "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n", "GET")
	want := "a.post-config b.post-config a.processor-init b.processor-init a.handler b.handler a.logger b.logger"
	if !eventually(2*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return strings.Join(order, " ") == want }) {
		t.Fatalf("hooks ran as %q, want %q", strings.Join(order, " "), want)
	}
}

func TestModuleErrorsNameTheModule(t *testing.T) {
	_, err := New(Config{Addr: "127.0.0.1:0", Modules: []Module{{
		Name:       "picky",
		PostConfig: func(*Config) error { return errors.New("no thanks") },
	}}})
	if err == nil || !strings.Contains(err.Error(), "module picky") {
		t.Fatalf("error %v does not name the module", err)
	}
}

func TestNoRequestBeforeEveryStageInitHasRun(t *testing.T) {
	var ready atomic.Int64
	slow := Module{
		Name: "slow-init",
		StageInit: func(info StageInfo) error {
			if info.Stage == StageWriter {
				time.Sleep(200 * time.Millisecond) // a device being opened, say
			}
			ready.Add(1)
			return nil
		},
		Handler: func(next processor.Handler) processor.Handler {
			return processor.HandlerFunc(func(w *processor.ResponseWriter, r *stages.Request) {
				fmt.Fprintf(w, "inits=%d", ready.Load())
			})
		},
	}
	s, err := New(Config{Addr: "127.0.0.1:0", Readers: 2, Writers: 2, Processors: 3, Modules: []Module{slow}})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(context.Background()) }()
	defer func() {
		s.Shutdown(context.Background())
		<-done
	}()
	c := dial(t, s) // connects at once (backlog), answered only after the inits
	_, body := exchange(t, c, bufio.NewReader(c), "GET / HTTP/1.1\r\nHost: x\r\n\r\n", "GET")
	if body != "inits=7" {
		t.Fatalf("served with %s, want all 7 stage-inits done (2 readers, 2 writers, 3 workers)", body)
	}
}

func TestFailingStageInitStopsServe(t *testing.T) {
	s, err := New(Config{Addr: "127.0.0.1:0", Modules: []Module{{
		Name: "broken",
		StageInit: func(info StageInfo) error {
			if info.Stage == StageWriter {
				return errors.New("no device")
			}
			return nil
		},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(context.Background()) }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "module broken") {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after a stage-init failed")
	}
}
