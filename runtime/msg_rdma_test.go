package runtime

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quartet-server/quartet/internal/rdmatest"
	"github.com/quartet-server/quartet/protocol/msg/msgclient"
	"github.com/quartet-server/quartet/protocol/msg/msgrdma"
	"github.com/quartet-server/quartet/rdma/deliver"
)

// attachEngine is the module that gives every writer loop its engine loop
// (as rdmahttp's module does for the engine it owns): completions come
// back where the replies are written.
func attachEngine(e *deliver.Engine) Module {
	return Module{Name: "rdma-test", StageInit: func(info StageInfo) error {
		if info.Stage != StageWriter || info.Sources == nil {
			return nil
		}
		return e.AttachLoop(info.Index, func(fd int, fn func()) (func() error, error) {
			id, err := info.Sources.AddSource(fd, fn)
			if err != nil {
				return nil, err
			}
			return func() error { return info.Sources.RemoveSource(id) }, nil
		})
	}}
}

// The echo by RDMA over the real pipeline, in both modes, from 0 B to
// 64 MiB (the payload limit): the reply's payload is written into (server-writes) or read from
// (client-reads) registered memory through the writer loops' engine,
// byte-exact, every exposure is confirmed by the client's completion
// frames (which the reader parses and a processor hands to the engine),
// and once the server has shut down the engine holds nothing.
func TestMsgEchoByRDMA(t *testing.T) {
	e, err := deliver.New(deliver.Config{Provider: rdmatest.Provider(t), Addr: rdmatest.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	// Admission control off: the echoes up to 64 MiB teach the class a
	// long service time (longer still under -race, beside the other
	// packages' tests), and CI once saw the burst of small calls after
	// them ("in flight together") refused for it, as admission should
	// (CodeBusy, "server overloaded"), which is not what this test is
	// about. TestMsgShedIsBusyAndKeepsTheConnection tests the refusal.
	cfg := Config{Addr: net.JoinHostPort(rdmatest.Host(), "0"), MsgAddr: net.JoinHostPort(rdmatest.Host(), "0"),
		Writers: 2, MsgRDMA: msgrdma.New(e).Stages(), Modules: []Module{attachEngine(e)}, Handler: Builtin(nil),
		QueueWaitTarget: -1}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(context.Background()) }()
	ep, err := deliver.NewEndpoint(deliver.EndpointConfig{Provider: rdmatest.Provider(t), Addr: net.JoinHostPort(rdmatest.Host(), "0"), OpTimeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	into, err := ep.NewBuffer(64 << 20)
	if err != nil {
		t.Fatal(err)
	}
	c, err := msgclient.Dial(callCtx(t), s.MsgAddr().String(), msgclient.Config{Endpoint: ep})
	if err != nil {
		t.Fatal(err)
	}
	sizes := []int{0, 1, 13, 4096, 65536 + 7, 1<<20 + 3, 8 << 20, 64 << 20}
	for _, mode := range []deliver.Mode{deliver.ModeServerWrites, deliver.ModeClientReads} {
		for _, n := range sizes {
			t.Run(fmt.Sprintf("%s/%d", mode, n), func(t *testing.T) {
				in := pseudoRandom(uint64(n), n)
				r, err := c.Do(callCtx(t), &msgclient.Request{Payload: in, Deliver: mode, Into: into})
				if err != nil {
					t.Fatal(err)
				}
				if !r.ByRDMA() || r.Attempts != 1 || r.RDMA.Mode != mode {
					t.Fatalf("reply flags %v, %d attempts, %+v", r.Flags, r.Attempts, r.RDMA)
				}
				if !bytes.Equal(r.Payload, in) {
					t.Fatalf("echo of %d bytes came back as %d different bytes", n, len(r.Payload))
				}
			})
		}
	}
	// Plain requests still go inline on the same connection.
	if out, err := c.Call(callCtx(t), []byte("inline")); err != nil || string(out) != "inline" {
		t.Fatalf("plain call: %q, %v", out, err)
	}
	// Many at once on the one connection, both modes and inline mixed:
	// the connection's window holds them in flight together, their
	// replies (each behind its own RDMA completion) leave as they are
	// ready, one at a time on the wire.
	written := int64(len(sizes) - 1) // 0 B is nothing to write
	t.Run("in flight together", func(t *testing.T) {
		const callers, calls = 8, 6
		var wg sync.WaitGroup
		var writes atomic.Int64
		errs := make(chan error, callers)
		for g := range callers {
			buf, err := ep.NewBuffer(64 << 10)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { buf.Close() })
			wg.Go(func() {
				for k := range calls {
					n := 1 + (g*4099+k*7919)%(64<<10)
					in := pseudoRandom(uint64(g<<8|k), n)
					req := &msgclient.Request{Payload: in}
					switch (g + k) % 3 {
					case 0:
						req.Deliver, req.Into = deliver.ModeServerWrites, buf
						writes.Add(1)
					case 1:
						req.Deliver, req.Into = deliver.ModeClientReads, buf
					}
					r, err := c.Do(callCtx(t), req)
					switch {
					case err != nil:
						errs <- err
						return
					case req.Deliver != 0 && !r.ByRDMA():
						errs <- fmt.Errorf("caller %d call %d: not by RDMA: %v", g, k, r.Flags)
						return
					case !bytes.Equal(r.Payload, in):
						errs <- fmt.Errorf("caller %d call %d: %d bytes back for %d", g, k, len(r.Payload), n)
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		written += writes.Load()
	})
	if st := e.Stats(); st.Redials > 0 {
		t.Logf("%d deliveries posted again on a new channel (the first refused the post)", st.Redials)
	}
	if !rdmatest.Eventually(time.Minute, func() bool {
		st := e.Stats()
		return st.LiveExposures == 0 && st.Written == written && st.Confirmed == st.Exposed
	}) {
		t.Errorf("engine after the echoes: %+v", e.Stats())
	}
	c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if err := <-served; err != nil {
		t.Errorf("Serve: %v", err)
	}
	if err := into.Close(); err != nil {
		t.Errorf("buffer Close: %v", err)
	}
	if err := ep.Close(); err != nil {
		t.Errorf("endpoint Close: %v", err)
	}
	if err := e.Close(); err != nil {
		t.Errorf("engine Close: %v", err)
	}
	if st := e.Stats(); st.LiveMRs != 0 || st.LiveMWs != 0 || st.LiveQPs != 0 || st.LiveExposures != 0 || st.LivePDs != 0 || st.PooledMRs != 0 {
		t.Errorf("after Close: %+v", st)
	}
}
