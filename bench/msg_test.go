//go:build linux

package bench

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quartet-server/quartet/protocol/msg"
	"github.com/quartet-server/quartet/runtime"
)

// startMsgServer runs a real runtime.Server with the messenger on its own
// 127.0.0.1 port, answering with d, and returns the msg:// target.
func startMsgServer(t *testing.T, d msg.Dispatcher) string {
	t.Helper()
	s := serveForTest(t, runtime.Config{MsgDispatcher: d}, nil)
	return "msg://" + s.MsgAddr().String()
}

// serveForTest runs a real runtime.Server on 127.0.0.1 ports (HTTP and the
// messenger) with cfg, the built-in handler and no log, until the test
// ends; then it shuts the server down and, once Serve has returned, runs
// after (nil: nothing).
func serveForTest(t *testing.T, cfg runtime.Config, after func() error) *runtime.Server {
	t.Helper()
	cfg.Addr, cfg.MsgAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Handler, cfg.Logger = runtime.Builtin(nil), slog.New(slog.DiscardHandler)
	s, err := runtime.New(cfg)
	if err != nil {
		if after != nil {
			after()
		}
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(context.Background()) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		if after != nil {
			if err := after(); err != nil {
				t.Errorf("after Serve: %v", err)
			}
		}
	})
	return s
}

// countingEcho is msg.Echo that counts the requests it answers.
func countingEcho(n *atomic.Int64) msg.Dispatcher {
	return msg.DispatcherFunc(func(m *msg.Message) {
		n.Add(1)
		msg.Echo{}.Dispatch(m)
	})
}

// A messenger run's counts add up, closed and open loop, pipelined, from
// empty frames to 64 KiB: every request the server answered is a reply
// checked, and the bytes are exactly the frames'.
func TestMsgRunCounts(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{name: "closed-13", cfg: Config{Conns: 4, Requests: 600, Payload: 13}},
		{name: "empty-frames", cfg: Config{Conns: 2, Requests: 300, Payload: 0}},
		{name: "pipeline-8", cfg: Config{Conns: 3, Pipeline: 8, Requests: 1600, Payload: 13}},
		{name: "64KiB-pipelined", cfg: Config{Conns: 2, Pipeline: 3, Requests: 120, Payload: 64 << 10}},
		{name: "open-loop", cfg: Config{Conns: 4, Requests: 400, Rate: 4000, Payload: 13}},
		{name: "warm-up", cfg: Config{Conns: 2, Requests: 200, Warmup: 100 * time.Millisecond, Payload: 100}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var served atomic.Int64
			cfg := tt.cfg
			cfg.URL = startMsgServer(t, countingEcho(&served))
			res, err := Run(t.Context(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			n := uint64(cfg.Requests)
			if res.Requests != n {
				t.Errorf("%d replies checked, want %d", res.Requests, n)
			}
			if got := served.Load(); cfg.Warmup == 0 && got != int64(n) || got < int64(n) {
				t.Errorf("server answered %d requests, generator checked %d replies", got, n)
			}
			frame := uint64(msg.HeaderSize + cfg.Payload)
			if res.BytesRead != n*frame || res.BytesWritten != n*frame {
				t.Errorf("bytes read %d, written %d; want %d each", res.BytesRead, res.BytesWritten, n*frame)
			}
			if e := res.ErrorTotal(); e != 0 || res.Lost != 0 || res.Reconnects != 0 {
				t.Errorf("errors %+v, lost %d, reconnects %d", res.Errors, res.Lost, res.Reconnects)
			}
			if res.Protocol != "msg" || res.Payload != cfg.Payload || res.Status != (StatusCounts{}) {
				t.Errorf("protocol %q payload %d status %v", res.Protocol, res.Payload, res.Status)
			}
			if res.RequestsPerSec <= 0 || res.Latency.P50 <= 0 || res.Latency.Max < res.Latency.P99 {
				t.Errorf("implausible result %+v", res)
			}
			if (cfg.Rate > 0) != (res.Uncorrected != nil) || cfg.Rate > 0 && res.Mode != "open" {
				t.Errorf("mode %q, uncorrected %v", res.Mode, res.Uncorrected)
			}
		})
	}
}

// corrupting answers request i (from 0, per server) by kind[i%len(kind)]:
// an echo, an error frame, a payload one byte off, or one byte too long.
func corrupting(kinds string) msg.Dispatcher {
	var i atomic.Int64
	return msg.DispatcherFunc(func(m *msg.Message) {
		k := kinds[(i.Add(1)-1)%int64(len(kinds))]
		switch k {
		case 'e':
			_ = m.SendReply(msg.Reply{Code: msg.CodeApplication, Payload: []byte("no")})
		case 'x':
			p := bytes.Clone(m.Payload)
			p[len(p)/2] ^= 0x20
			_ = m.SendReply(msg.Reply{Payload: p})
		case 'l':
			_ = m.SendReply(msg.Reply{Payload: append(bytes.Clone(m.Payload), 0)})
		default:
			_ = m.SendReply(msg.Reply{Payload: m.Payload})
		}
	})
}

// Error frames and wrong payloads are counted as errors of their own
// kinds, per reply, and the connection carries on: every request is still
// a reply checked, none is lost.
func TestMsgRunCountsBadReplies(t *testing.T) {
	tests := []struct {
		name                 string
		kinds                string
		pipeline             int
		wantReply, wantWrong uint64
	}{
		{name: "all-error-frames", kinds: "e", pipeline: 1, wantReply: 300},
		{name: "all-corrupt", kinds: "x", pipeline: 4, wantWrong: 300},
		{name: "one-in-three-long", kinds: ".l.", pipeline: 2, wantWrong: 100},
		{name: "mixed", kinds: "..ex", pipeline: 3, wantReply: 75, wantWrong: 75},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// One connection, so that the dispatcher's order is the
			// generator's and the counts are exact.
			cfg := Config{URL: startMsgServer(t, corrupting(tt.kinds)), Conns: 1,
				Pipeline: tt.pipeline, Requests: 300, Payload: 13}
			res, err := Run(t.Context(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			if res.Requests != 300 || res.Lost != 0 || res.Reconnects != 0 {
				t.Errorf("%d replies checked, lost %d, reconnects %d; want 300, 0, 0", res.Requests, res.Lost, res.Reconnects)
			}
			e := res.Errors
			if e.Reply != tt.wantReply || e.Mismatch != tt.wantWrong || res.ErrorTotal() != tt.wantReply+tt.wantWrong {
				t.Errorf("errors %+v; want reply %d, mismatch %d", e, tt.wantReply, tt.wantWrong)
			}
		})
	}
}

// quartet bench msg://: the summary, --json and --csv through Main, and
// -b's default of 13 bytes.
func TestMainMsg(t *testing.T) {
	target := startMsgServer(t, msg.Echo{})
	tests := []struct {
		name  string
		args  []string
		check func(t *testing.T, out string)
	}{
		{name: "text", args: []string{"-n", "100", "-c", "2", "-p", "2", target}, check: func(t *testing.T, out string) {
			for _, want := range []string{target + ": 2 connections", "replies: 100 checked, 0 error frames, 0 mismatched", "mismatch 0"} {
				if !strings.Contains(out, want) {
					t.Errorf("no %q in:\n%s", want, out)
				}
			}
		}},
		{name: "json", args: []string{"--json", "-n", "200", "-c", "2", "--server-pid", pidString(), target}, check: func(t *testing.T, out string) {
			var raw map[string]any
			if err := json.Unmarshal([]byte(out), &raw); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			errs, _ := raw["errors"].(map[string]any)
			if raw["protocol"] != "msg" || raw["payload"] != 13.0 || raw["requests"] != 200.0 ||
				raw["bytes_read"] != 200.0*(msg.HeaderSize+13) || raw["server_cpu_known"] != true ||
				errs["reply"] != 0.0 || errs["mismatch"] != 0.0 || raw["url"] != target {
				t.Errorf("fields: %s", out)
			}
		}},
		{name: "csv payload", args: []string{"--csv", "-b", "100", "-n", "50", "-c", "1", target}, check: func(t *testing.T, out string) {
			recs, err := csv.NewReader(strings.NewReader(out)).ReadAll()
			if err != nil || len(recs) != 2 || len(recs[0]) != len(CSVHeader()) {
				t.Fatalf("csv %v: %q", err, out)
			}
			col := map[string]string{}
			for i, h := range recs[0] {
				col[h] = recs[1][i]
			}
			if col["requests"] != "50" || col["payload"] != "100" || col["err_mismatch"] != "0" ||
				col["bytes_per_sec"] == "0" || col["url"] != target {
				t.Errorf("row %v", col)
			}
		}},
		{name: "open loop", args: []string{"--json", "-R", "1000", "-d", "300ms", "-b", "0", "-c", "2", target}, check: func(t *testing.T, out string) {
			var res Result
			if err := json.Unmarshal([]byte(out), &res); err != nil {
				t.Fatal(err)
			}
			if res.Mode != "open" || res.Requests < 100 || res.ErrorTotal() != 0 || res.Uncorrected == nil || res.Payload != 0 {
				t.Errorf("result %s", out)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut strings.Builder
			if err := Main(t.Context(), tt.args, Env{Stdout: &out, Stderr: &errOut}); err != nil {
				t.Fatalf("%v: %s", err, errOut.String())
			}
			tt.check(t, out.String())
		})
	}
	for _, args := range [][]string{
		{"-m", "/hello", target},
		{"-H", "X-A: b", target},
		{"-b", "-1", "-n", "1", target},
		{"--vs-wrk", "-n", "1", target},
		{"-n", "1", "msg://127.0.0.1:" + strconv.Itoa(1) + "/path"},
	} {
		var out, errOut strings.Builder
		if err := Main(t.Context(), args, Env{Stdout: &out, Stderr: &errOut}); err == nil {
			t.Errorf("%q: no error", args)
		}
	}
}

// Compare's progress lines name what a row's runs send: a messenger
// server's are echoes of the payload, not the HTTP path the cells carry.
func TestCompareMsgProgressLines(t *testing.T) {
	tests := []struct {
		name    string
		payload int
		want    string
	}{
		{name: "default payload", payload: DefaultMsgPayload, want: "echo of 13 bytes"},
		{name: "4KiB", payload: 4096, want: "echo of 4096 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var log bytes.Buffer
			spec := CompareSpec{Paths: []string{"/hello"}, Conns: []int{2}, Modes: []CompareMode{{Name: "shared"}},
				Rounds: 2, Duration: 100 * time.Millisecond, Generator: GenQuartet, Load: Config{Payload: tt.payload}, Log: &log}
			res, err := Compare(t.Context(), spec, []Contender{URLContender("msg", startMsgServer(t, msg.Echo{}), 0)})
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Rows) != 1 || len(res.Rows[0].Samples) != 2 || res.Rows[0].Err != "" {
				t.Fatalf("rows %+v", res.Rows)
			}
			var runs int
			for _, l := range strings.Split(log.String(), "\n") {
				if !strings.HasPrefix(l, "[") {
					continue
				}
				runs++
				if !strings.Contains(l, " msg shared c=2 "+tt.want+": ") || strings.Contains(l, "/hello") {
					t.Errorf("progress line %q does not say %q", l, tt.want)
				}
			}
			if runs != 2 {
				t.Errorf("%d progress lines in:\n%s", runs, log.String())
			}
		})
	}
}
