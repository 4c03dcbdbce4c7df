package msgrdma_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/quartet-server/quartet/internal/rdmatest"
	"github.com/quartet-server/quartet/protocol/msg"
	"github.com/quartet-server/quartet/protocol/msg/internal/msgtest"
	"github.com/quartet-server/quartet/protocol/msg/msgclient"
	"github.com/quartet-server/quartet/protocol/msg/msgrdma"
	"github.com/quartet-server/quartet/rdma/deliver"
)

// BenchmarkReplies measures the server's side of replies by RDMA,
// signalled sparsely against signalling every reply: server CPU per
// reply (user+system time of this process, which runs only the server:
// the engine, the binding, the test server and the soft provider's
// server half) and replies per second, for small and large replies in
// both modes. The client runs in a child process (this test binary,
// TestBenchClient) with benchInFlight requests in flight on one
// connection; each request asks for a reply of the given size, which the
// server sends from one static buffer, so the request's own bytes cost
// nothing. Allocations are the server's, per reply.
//
//	go test -run '^$' -bench Replies -benchtime 2000x -count 5 ./protocol/msg/msgrdma
//
// Sub-benchmarks run every and sparse next to each other for each size
// and mode; -count repeats each sub-benchmark back to back (A A B B), it
// does not alternate them, so on a busy machine compare pairs from
// several invocations. (runtime's BenchmarkMsgReplies takes turns within
// one run instead.)
func BenchmarkReplies(b *testing.B) {
	for _, mode := range []deliver.Mode{deliver.ModeServerWrites, deliver.ModeClientReads} {
		for _, size := range []int{4 << 10, 1 << 20} {
			for _, sig := range []deliver.Signalling{deliver.SignalEveryReply, deliver.SignalSparse} {
				b.Run(fmt.Sprintf("%s/%s/%s", mode, sizeName(size), sig), func(b *testing.B) {
					benchReplies(b, mode, size, sig)
				})
			}
		}
	}
}

const benchInFlight = 16

func sizeName(n int) string {
	if n >= 1<<20 {
		return fmt.Sprintf("%dMiB", n>>20)
	}
	return fmt.Sprintf("%dKiB", n>>10)
}

// sized answers each request with the number of bytes its 4-byte
// payload asks for, from one static buffer.
type sized struct{ data []byte }

func (d sized) Dispatch(m *msg.Message) {
	n := int(binary.BigEndian.Uint32(m.Payload))
	_ = m.SendReply(msg.Reply{Payload: d.data[:min(n, len(d.data))]})
}

func benchReplies(b *testing.B, mode deliver.Mode, size int, sig deliver.Signalling) {
	e, err := deliver.New(deliver.Config{Provider: rdmatest.Provider(b), Addr: rdmatest.Addr(), Signal: sig})
	if err != nil {
		b.Fatal(err)
	}
	if err := e.AttachLoop(0, deliver.GoSource); err != nil {
		b.Fatal(err)
	}
	srv := msgtest.Start(b, msgtest.Config{Addr: net.JoinHostPort(rdmatest.Host(), "0"), RDMA: msgrdma.New(e), Dispatcher: sized{make([]byte, size)}})
	// Registered before the client's, so it runs after the client has
	// ended: the engine closes with no channel of the client's left.
	b.Cleanup(func() {
		srv.Close()
		if err := e.Close(); err != nil {
			b.Error(err)
		}
	})
	client := rdmatest.StartChild(b, "TestBenchClient", envBenchClient, fmt.Sprintf("%s,%s,%d,%d", srv.Addr(), mode, size, b.N))
	client.Expect("ready") // connected, channel dialed, warmed up
	before := e.Stats()
	cpu0 := cpuTime()
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	client.Send("go")
	if errs := client.Expect("done"); errs != "0" {
		b.Fatalf("the client saw %s errors", errs)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	cpu := cpuTime() - cpu0
	st := e.Stats()
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "server-ns/reply")
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "replies/s")
	b.ReportMetric(float64(st.Signaled-before.Signaled)/float64(b.N), "completions/reply")
	client.Send("exit")
}

// cpuTime is this process's user and system time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

const envBenchClient = "QUARTET_MSGRDMA_BENCH_CLIENT"

// TestBenchClient is BenchmarkReplies's client process; it does nothing
// unless the benchmark started it.
func TestBenchClient(t *testing.T) {
	f := rdmatest.ChildArgs(t, envBenchClient, 4)
	addr := f[0]
	mode, _ := deliver.ParseMode(f[1])
	size, _ := strconv.Atoi(f[2])
	n, _ := strconv.Atoi(f[3])
	ep, err := deliver.NewEndpoint(deliver.EndpointConfig{Provider: rdmatest.Provider(t), Addr: net.JoinHostPort(rdmatest.Host(), "0"), OpTimeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer ep.Close()
	c, err := msgclient.Dial(context.Background(), addr, msgclient.Config{Endpoint: ep, RDMARetries: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var req [4]byte
	binary.BigEndian.PutUint32(req[:], uint32(size))
	bufs := make([]*deliver.Buffer, benchInFlight)
	for i := range bufs {
		if bufs[i], err = ep.NewBuffer(size); err != nil {
			t.Fatal(err)
		}
	}
	run := func(total int) int64 {
		return rdmatest.Drive(benchInFlight, total, func(i int) error {
			r, err := c.Do(context.Background(), &msgclient.Request{Payload: req[:], Deliver: mode, Into: bufs[i]})
			if err != nil || !r.ByRDMA() || len(r.Payload) != size {
				return fmt.Errorf("%v, by RDMA %v, %d bytes", err, r.ByRDMA(), len(r.Payload))
			}
			return nil
		})
	}
	if errs := run(2 * benchInFlight); errs != 0 {
		t.Fatalf("warm-up: %d errors", errs)
	}
	fmt.Println("ready")
	in := bufio.NewScanner(os.Stdin)
	if !in.Scan() {
		return
	}
	fmt.Printf("done %d\n", run(n))
	in.Scan() // "exit": the server has read its counters
}
