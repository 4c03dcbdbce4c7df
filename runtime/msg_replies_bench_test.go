package runtime

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quartet-server/quartet/internal/rdmatest"
	"github.com/quartet-server/quartet/protocol/msg"
	"github.com/quartet-server/quartet/protocol/msg/msgclient"
	"github.com/quartet-server/quartet/protocol/msg/msgrdma"
	"github.com/quartet-server/quartet/rdma/deliver"
)

// BenchmarkMsgReplies measures issue 17's large replies through the four
// stages: server CPU seconds per GiB replied and GiB/s for 1 MiB replies
// by TCP, by RDMA server-writes and by RDMA client-reads, on one server
// configuration (Config.MsgAddr with Config.MsgRDMA on the soft provider
// unless rdmatest's variables name a device), so that only the reply's
// way differs. The server runs in this process, which runs nothing else
// during the measurement: its CPU is this process's user and system time,
// the soft provider's server half included. The client is a child
// process (this test binary, TestMsgRepliesClient) with
// replyConns × replyInFlight requests in flight; the stages serve one
// request per connection at a time, so each connection has the next one
// waiting.
//
// Two kinds of request: echo, a 1 MiB request echoed by msg.Echo (so the
// server also reads 1 MiB by TCP per reply, the same in every mode), and
// reply, a 4-byte request that asks for 1 MiB from one static buffer (the
// reply's way alone). Allocations are the server's, per reply.
//
//	go test -run '^$' -bench MsgReplies -benchtime 3s -count 3 ./runtime
//
// The sub-benchmarks of each kind run next to each other, so -count
// alternates them (tcp, server-writes, client-reads, tcp, ...).
func BenchmarkMsgReplies(b *testing.B) {
	const size = 1 << 20
	kinds := []struct {
		name string
		req  int
		d    msg.Dispatcher
	}{
		{"echo", size, msg.Echo{}},
		{"reply", 4, sizedReply{make([]byte, size)}},
	}
	for _, k := range kinds {
		for _, mode := range []deliver.Mode{deliver.ModeOff, deliver.ModeServerWrites, deliver.ModeClientReads} {
			b.Run(fmt.Sprintf("%s/1MiB/%s", k.name, replyWay(mode)), func(b *testing.B) {
				benchMsgReplies(b, mode, k.req, size, k.d)
			})
		}
	}
}

// The client's load: connections, and requests in flight on each.
const (
	replyConns    = 4
	replyInFlight = 2
)

// replyWay names a reply's way in the benchmark's names.
func replyWay(m deliver.Mode) string {
	if m == deliver.ModeOff {
		return "tcp"
	}
	return m.String()
}

// sizedReply answers each request with the number of bytes its 4-byte
// payload asks for, from one static buffer.
type sizedReply struct{ data []byte }

func (d sizedReply) Dispatch(m *msg.Message) {
	if len(m.Payload) != 4 {
		_ = m.SendReply(msg.Reply{Code: msg.CodeUnsupported, Payload: []byte("want a 4-byte size")})
		return
	}
	n := int(binary.BigEndian.Uint32(m.Payload))
	_ = m.SendReply(msg.Reply{Payload: d.data[:min(n, len(d.data))]})
}

func benchMsgReplies(b *testing.B, mode deliver.Mode, reqSize, size int, d msg.Dispatcher) {
	e, err := deliver.New(deliver.Config{Provider: rdmatest.Provider(b), Addr: rdmatest.Addr()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { // after the server's shutdown, registered below
		if err := e.Close(); err != nil {
			b.Error(err)
		}
	})
	host := net.JoinHostPort(rdmatest.Host(), "0")
	s := startServer(b, Config{Addr: host, MsgAddr: host, MsgDispatcher: d,
		MsgRDMA: msgrdma.New(e).Stages(), Modules: []Module{attachEngine(e)}})

	cmd := exec.Command(os.Args[0], "-test.run=^TestMsgRepliesClient$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s,%s,%d,%d,%d", envMsgRepliesClient, s.MsgAddr(), replyWay(mode), reqSize, size, b.N))
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		// The client ends once its stdin closes; one that is stuck is
		// killed rather than waited for.
		in.Close()
		exited := make(chan struct{})
		go func() {
			_ = cmd.Wait()
			close(exited)
		}()
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}()
	lines := bufio.NewScanner(out)
	expect := func(word string) string {
		for lines.Scan() {
			if l := lines.Text(); strings.HasPrefix(l, word) {
				return strings.TrimSpace(strings.TrimPrefix(l, word))
			}
		}
		b.Fatalf("the client ended before %q: %v", word, lines.Err())
		return ""
	}
	expect("ready") // connected, channels dialed, warmed up
	cpu0 := processCPU()
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	_, _ = io.WriteString(in, "go\n")
	if errs := expect("done"); errs != "0" {
		b.Fatalf("the client saw %s errors", errs)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	cpu := processCPU() - cpu0 // tuning_loops.go's
	gib := float64(b.N) * float64(size) / (1 << 30)
	b.ReportMetric(cpu.Seconds()/gib, "cpu-s/GiB")
	b.ReportMetric(gib/elapsed.Seconds(), "GiB/s")
	_, _ = io.WriteString(in, "exit\n")
}

const envMsgRepliesClient = "QUARTET_MSG_REPLIES_CLIENT"

// TestMsgRepliesClient is BenchmarkMsgReplies's client process; it does
// nothing unless the benchmark started it. Its arguments, in
// envMsgRepliesClient: the server's messenger address, the reply's way,
// the request's and the reply's sizes, and how many replies to measure.
func TestMsgRepliesClient(t *testing.T) {
	arg := os.Getenv(envMsgRepliesClient)
	if arg == "" {
		t.Skip("run by BenchmarkMsgReplies")
	}
	f := strings.Split(arg, ",")
	if len(f) != 5 {
		t.Fatalf("%s=%q", envMsgRepliesClient, arg)
	}
	addr := f[0]
	mode, err := deliver.ParseMode(f[1])
	if err != nil && f[1] != "tcp" {
		t.Fatal(err)
	}
	reqSize, _ := strconv.Atoi(f[2])
	size, _ := strconv.Atoi(f[3])
	n, _ := strconv.Atoi(f[4])

	cfg := msgclient.Config{RDMARetries: -1}
	if mode != deliver.ModeOff {
		ep, err := deliver.NewEndpoint(deliver.EndpointConfig{Provider: rdmatest.Provider(t), Addr: net.JoinHostPort(rdmatest.Host(), "0"), OpTimeout: 30 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer ep.Close()
		cfg.Endpoint = ep
	}
	ctx := context.Background()
	clients := make([]*msgclient.Client, replyConns)
	for i := range clients {
		if clients[i], err = msgclient.Dial(ctx, addr, cfg); err != nil {
			t.Fatal(err)
		}
		defer clients[i].Close()
	}
	req := make([]byte, reqSize)
	if reqSize == 4 {
		binary.BigEndian.PutUint32(req, uint32(size))
	}
	bufs := make([]*deliver.Buffer, replyConns*replyInFlight)
	if mode != deliver.ModeOff {
		for i := range bufs {
			if bufs[i], err = cfg.Endpoint.NewBuffer(size); err != nil {
				t.Fatal(err)
			}
			defer bufs[i].Close()
		}
	}
	run := func(total int) int64 {
		var next, errs atomic.Int64
		var wg sync.WaitGroup
		for i := range bufs {
			c := clients[i%replyConns]
			wg.Go(func() {
				for next.Add(1) <= int64(total) {
					r, err := c.Do(ctx, &msgclient.Request{Payload: req, Deliver: mode, Into: bufs[i]})
					if err != nil || r.ByRDMA() != (mode != deliver.ModeOff) || len(r.Payload) != size {
						if errs.Add(1) == 1 {
							fmt.Fprintf(os.Stderr, "msg replies client: %v, by RDMA %v, %d bytes\n", err, r.ByRDMA(), len(r.Payload))
						}
					}
				}
			})
		}
		wg.Wait()
		return errs.Load()
	}
	if errs := run(2 * len(bufs)); errs != 0 {
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
