package runtime

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
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
// (Config.MsgAddr with Config.MsgRDMA on the soft provider unless
// rdmatest's variables name a device), so that only the reply's way
// differs. The server runs in this process, which runs nothing else
// during the measurement: its CPU is this process's user and system time,
// the soft provider's server half included. The client is a child
// process (this test binary, TestMsgRepliesClient) with replyConns ×
// replyInFlight requests in flight; the stages serve one request per
// connection at a time, so each connection has the next one waiting.
//
// The three ways take turns on the same connections in replyRounds
// rounds, each round starting one way later, and each way sends b.N
// replies in all; a way's figures are its medians over the rounds, and
// the ratios (server-writes and client-reads over tcp) the medians of
// the per-round ratios, so that other work on the machine cancels in
// pairs, as in `quartet bench compare`.
//
// Two kinds of request: echo, a 1 MiB request echoed by msg.Echo (so the
// server also reads 1 MiB by TCP per reply, the same for every way), and
// reply, a 4-byte request that asks for 1 MiB from one static buffer (the
// reply's way alone). The figures are the metrics; ns/op, B/op and
// allocs/op are per b.N, that is for one reply by each way, the server's.
//
//	go test -run '^$' -bench MsgReplies -benchtime 3000x ./runtime
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
		b.Run(k.name+"/1MiB", func(b *testing.B) { benchMsgReplies(b, k.req, size, k.d) })
	}
}

// The client's load: connections, and requests in flight on each; and
// the rounds in which the ways take turns.
const (
	replyConns    = 4
	replyInFlight = 2
	replyRounds   = 3
)

// replyWays are the ways a reply's payload can go, in turn order.
var replyWays = [...]deliver.Mode{deliver.ModeOff, deliver.ModeServerWrites, deliver.ModeClientReads}

// replyWay names a reply's way in the benchmark's metrics.
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

// replyRun is one way's run in one round.
type replyRun struct {
	cpuPerGiB, gibPerSec float64
}

func benchMsgReplies(b *testing.B, reqSize, size int, d msg.Dispatcher) {
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

	client := rdmatest.StartChild(b, "TestMsgRepliesClient", envMsgRepliesClient, fmt.Sprintf("%s,%d,%d", s.MsgAddr(), reqSize, size))
	client.Expect("ready") // connected, channels dialed, every way warmed up

	var runs [len(replyWays)][]replyRun
	per := (b.N + replyRounds - 1) / replyRounds
	b.ReportAllocs()
	b.ResetTimer()
	for round := range replyRounds {
		for i := range replyWays {
			w := (i + round) % len(replyWays)
			cpu0, start := processCPU(), time.Now() // processCPU: tuning_loops.go's
			client.Send("run %s %d", replyWay(replyWays[w]), per)
			if errs := client.Expect("done"); errs != "0" {
				b.Fatalf("%s: the client saw %s errors", replyWay(replyWays[w]), errs)
			}
			elapsed, cpu := time.Since(start), processCPU()-cpu0
			gib := float64(per) * float64(size) / (1 << 30)
			runs[w] = append(runs[w], replyRun{cpuPerGiB: cpu.Seconds() / gib, gibPerSec: gib / elapsed.Seconds()})
		}
	}
	b.StopTimer()
	for w, way := range replyWays {
		b.ReportMetric(medianOf(runs[w], func(r replyRun) float64 { return r.cpuPerGiB }), replyWay(way)+"-cpu-s/GiB")
		b.ReportMetric(medianOf(runs[w], func(r replyRun) float64 { return r.gibPerSec }), replyWay(way)+"-GiB/s")
	}
	for w := 1; w < len(replyWays); w++ {
		var ratios []replyRun
		for r := range runs[w] {
			ratios = append(ratios, replyRun{cpuPerGiB: runs[w][r].cpuPerGiB / runs[0][r].cpuPerGiB})
		}
		b.ReportMetric(medianOf(ratios, func(r replyRun) float64 { return r.cpuPerGiB }), "cpu-"+replyWay(replyWays[w])+"/tcp")
	}
	client.Send("exit")
}

// medianOf is the median of f over rs (the mean of the middle two for an
// even count).
func medianOf(rs []replyRun, f func(replyRun) float64) float64 {
	xs := make([]float64, 0, len(rs))
	for _, r := range rs {
		xs = append(xs, f(r))
	}
	slices.Sort(xs)
	if n := len(xs); n%2 == 0 {
		return (xs[n/2-1] + xs[n/2]) / 2
	}
	return xs[len(xs)/2]
}

const envMsgRepliesClient = "QUARTET_MSG_REPLIES_CLIENT"

// TestMsgRepliesClient is BenchmarkMsgReplies's client process; it does
// nothing unless the benchmark started it. Its arguments, in
// envMsgRepliesClient: the server's messenger address, and the request's
// and the reply's sizes. On stdin, "run WAY N" sends N requests whose
// replies come by WAY (tcp, server-writes, client-reads) and answers
// "done ERRORS"; "exit" or the end of stdin ends it.
func TestMsgRepliesClient(t *testing.T) {
	f := rdmatest.ChildArgs(t, envMsgRepliesClient, 3)
	addr := f[0]
	reqSize, _ := strconv.Atoi(f[1])
	size, _ := strconv.Atoi(f[2])

	ep, err := deliver.NewEndpoint(deliver.EndpointConfig{Provider: rdmatest.Provider(t), Addr: net.JoinHostPort(rdmatest.Host(), "0"), OpTimeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer ep.Close()
	ctx := context.Background()
	clients := make([]*msgclient.Client, replyConns)
	for i := range clients {
		if clients[i], err = msgclient.Dial(ctx, addr, msgclient.Config{Endpoint: ep, RDMARetries: -1}); err != nil {
			t.Fatal(err)
		}
		defer clients[i].Close()
	}
	req := make([]byte, reqSize)
	if reqSize == 4 {
		binary.BigEndian.PutUint32(req, uint32(size))
	}
	bufs := make([]*deliver.Buffer, replyConns*replyInFlight)
	for i := range bufs {
		if bufs[i], err = ep.NewBuffer(size); err != nil {
			t.Fatal(err)
		}
		defer bufs[i].Close()
	}
	run := func(mode deliver.Mode, total int) int64 {
		return rdmatest.Drive(len(bufs), total, func(i int) error {
			r, err := clients[i%replyConns].Do(ctx, &msgclient.Request{Payload: req, Deliver: mode, Into: bufs[i]})
			if err != nil || r.ByRDMA() != (mode != deliver.ModeOff) || len(r.Payload) != size {
				return fmt.Errorf("%s: %v, by RDMA %v, %d bytes", replyWay(mode), err, r.ByRDMA(), len(r.Payload))
			}
			return nil
		})
	}
	for _, mode := range replyWays {
		if errs := run(mode, 2*len(bufs)); errs != 0 {
			t.Fatalf("warm-up by %s: %d errors", replyWay(mode), errs)
		}
	}
	fmt.Println("ready")
	ways := map[string]deliver.Mode{}
	for _, m := range replyWays {
		ways[replyWay(m)] = m
	}
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		var way string
		var n int
		if _, err := fmt.Sscanf(in.Text(), "run %s %d", &way, &n); err != nil {
			return // "exit"
		}
		mode, ok := ways[way]
		if !ok {
			t.Fatalf("unknown way %q", way)
		}
		fmt.Printf("done %d\n", run(mode, n))
	}
}
