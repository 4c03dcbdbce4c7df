//go:build linux

package bench

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/quartet-server/quartet/protocol/msg"
	"github.com/quartet-server/quartet/protocol/msg/msgrdma"
	"github.com/quartet-server/quartet/rdma/deliver"
	"github.com/quartet-server/quartet/rdma/rdmatool"
	"github.com/quartet-server/quartet/rdmahttp"
	"github.com/quartet-server/quartet/runtime"
)

// startMsgRDMAServer runs a real runtime.Server with the messenger on
// 127.0.0.1 and its replies by RDMA on the soft provider, configured as
// quartet serve --rdma soft configures it (rdmahttp's module owns the
// engine and attaches it to the writer loops; the messenger shares it),
// and returns the msg:// target and the engine's counters.
func startMsgRDMAServer(t *testing.T, d msg.Dispatcher) (string, func() deliver.Stats) {
	t.Helper()
	p, err := rdmatool.NewRegistry().Get("soft")
	if err != nil {
		t.Fatal(err)
	}
	rmod, err := rdmahttp.NewServer(rdmahttp.Config{Provider: p, Addr: netip.MustParseAddr("127.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	// rmod closes after Serve: the writer loops whose CQs it owns have
	// stopped by then.
	s := serveForTest(t, runtime.Config{MsgDispatcher: d,
		MsgRDMA: msgrdma.New(rmod.Engine()).Stages(), Modules: []runtime.Module{rmod.Module()}}, rmod.Close)
	return "msg://" + s.MsgAddr().String(), rmod.Stats
}

// A run with --msg-rdma against a server that serves RDMA: every reply's
// payload comes by RDMA, in both modes, from a byte to a mebibyte and a
// bit, and is byte-exact (the run compares each with what it sent, as
// the corrupting server shows); the server's engine moved them.
func TestMsgRDMARun(t *testing.T) {
	tests := []struct {
		name         string
		mode         deliver.Mode
		payload      int
		corrupt      bool
		wantMismatch bool
	}{
		{name: "server-writes/13", mode: deliver.ModeServerWrites, payload: 13},
		{name: "server-writes/1MiB+3", mode: deliver.ModeServerWrites, payload: 1<<20 + 3},
		{name: "client-reads/1", mode: deliver.ModeClientReads, payload: 1},
		{name: "client-reads/64KiB+7", mode: deliver.ModeClientReads, payload: 64<<10 + 7},
		{name: "server-writes/corrupted", mode: deliver.ModeServerWrites, payload: 4096, corrupt: true, wantMismatch: true},
		{name: "client-reads/corrupted", mode: deliver.ModeClientReads, payload: 4096, corrupt: true, wantMismatch: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := msg.Dispatcher(msg.Echo{})
			if tt.corrupt {
				d = corrupting("x")
			}
			target, engine := startMsgRDMAServer(t, d)
			const n = 120
			res, err := Run(t.Context(), Config{URL: target, Conns: 2, Pipeline: 3, Requests: n, Payload: tt.payload,
				MsgRDMA: tt.mode, MsgProvider: "soft", Timeout: 30 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			d2 := res.RDMA
			if d2 == nil || d2.Mode != tt.mode.String() || d2.Provider != "soft" {
				t.Fatalf("rdma figures %+v", d2)
			}
			if tt.wantMismatch {
				if res.Errors.Mismatch != n || res.Requests != 0 {
					t.Errorf("%d mismatched, %d replies counted; want %d, 0", res.Errors.Mismatch, res.Requests, n)
				}
				return
			}
			if res.Requests != n || res.ErrorTotal() != 0 || d2.ByRDMA != n || d2.Fallbacks != 0 {
				t.Errorf("%d replies, errors %+v, rdma %+v; want %d by RDMA", res.Requests, res.Errors, d2, n)
			}
			if res.BytesRead != n*uint64(tt.payload) || res.Protocol != protoMsg || res.Latency.P50 <= 0 {
				t.Errorf("bytes read %d, protocol %q, p50 %v", res.BytesRead, res.Protocol, res.Latency.P50)
			}
			st := engine()
			if tt.mode == deliver.ModeServerWrites && st.Written < n || tt.mode == deliver.ModeClientReads && st.Exposed < n {
				t.Errorf("the server's engine: %+v", st)
			}
		})
	}
}

// A server without RDMA answers every request inline with the
// protocol's fallback (reason no-rdma): the run counts those replies as
// fallbacks, not errors, and says so.
func TestMsgRDMAFallbacksCounted(t *testing.T) {
	target := startMsgServer(t, msg.Echo{})
	for _, mode := range []deliver.Mode{deliver.ModeServerWrites, deliver.ModeClientReads} {
		t.Run(mode.String(), func(t *testing.T) {
			const n = 200
			res, err := Run(t.Context(), Config{URL: target, Conns: 2, Pipeline: 2, Requests: n, Payload: 100,
				MsgRDMA: mode, MsgProvider: "soft"})
			if err != nil {
				t.Fatal(err)
			}
			d := res.RDMA
			if res.Requests != n || res.ErrorTotal() != 0 || d == nil || d.ByRDMA != 0 || d.Fallbacks != n ||
				d.FallbackReasons[deliver.ReasonNoRDMA.String()] != n || len(d.FallbackReasons) != 1 {
				t.Fatalf("%d replies, errors %+v, rdma %+v", res.Requests, res.Errors, d)
			}
			var text bytes.Buffer
			if err := res.WriteText(&text); err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{"replies by RDMA (" + mode.String() + ", soft provider)",
				"rdma: 0 by RDMA, 200 fell back to TCP (no-rdma 200)", "warning: 200 of 200 replies came over TCP"} {
				if !strings.Contains(text.String(), want) {
					t.Errorf("no %q in:\n%s", want, text.String())
				}
			}
		})
	}
}

// quartet bench --msg-rdma through Main: the summary and --json say how
// the replies came; flags that cannot work together are refused with a
// clear error before any load.
func TestMainMsgRDMA(t *testing.T) {
	target, _ := startMsgRDMAServer(t, msg.Echo{})
	plain := startMsgServer(t, msg.Echo{})
	runCLICases(t, []cliCase{
		{name: "text", args: []string{"--msg-rdma", "server-writes", "--msg-provider", "soft", "-n", "100", "-c", "2", target},
			check: func(t *testing.T, out string) {
				if !strings.Contains(out, "rdma: 100 by RDMA, 0 fell back to TCP") || strings.Contains(out, "warning") {
					t.Errorf("summary:\n%s", out)
				}
			}},
		{name: "json", args: []string{"--json", "--msg-rdma", "client-reads", "-b", "5000", "-n", "50", "-c", "1", "-p", "4", target},
			check: func(t *testing.T, out string) {
				var res Result
				if err := json.Unmarshal([]byte(out), &res); err != nil {
					t.Fatalf("%v: %s", err, out)
				}
				if res.RDMA == nil || res.RDMA.Mode != "client-reads" || res.RDMA.ByRDMA != 50 || res.Payload != 5000 {
					t.Errorf("rdma %+v, payload %d", res.RDMA, res.Payload)
				}
			}},
		{name: "duration with warm-up", args: []string{"--msg-rdma", "server-writes", "-d", "2s", "-w", "200ms", "-c", "2", "-p", "2", target},
			check: func(t *testing.T, out string) {
				var checked, byRDMA, fell int
				for _, l := range strings.Split(out, "\n") {
					l = strings.TrimSpace(l)
					if strings.HasPrefix(l, "replies:") {
						_, _ = fmt.Sscanf(l, "replies: %d checked", &checked)
					}
					if strings.HasPrefix(l, "rdma:") {
						_, _ = fmt.Sscanf(l, "rdma: %d by RDMA, %d fell back", &byRDMA, &fell)
					}
				}
				if checked == 0 || byRDMA != checked || fell != 0 {
					t.Errorf("%d checked, %d by RDMA, %d fell back:\n%s", checked, byRDMA, fell, out)
				}
			}},
		{name: "csv", args: []string{"--csv", "--msg-rdma", "server-writes", "-n", "20", "-c", "1", target},
			check: func(t *testing.T, out string) {
				recs, err := csv.NewReader(strings.NewReader(out)).ReadAll()
				if err != nil || len(recs) != 2 || len(recs[0]) != len(CSVHeader()) || len(recs[1]) != len(recs[0]) {
					t.Fatalf("csv %v: %q", err, out)
				}
				col := map[string]string{}
				for i, h := range recs[0] {
					col[h] = recs[1][i]
				}
				if col["rdma_mode"] != "server-writes" || col["by_rdma"] != "20" || col["rdma_fallbacks"] != "0" {
					t.Errorf("row %v", col)
				}
			}},
		{name: "fallbacks", args: []string{"--msg-rdma", "server-writes", "-n", "30", "-c", "1", plain},
			check: func(t *testing.T, out string) {
				if !strings.Contains(out, "rdma: 0 by RDMA, 30 fell back to TCP (no-rdma 30)") {
					t.Errorf("summary:\n%s", out)
				}
			}},
		{name: "bad mode", args: []string{"--msg-rdma", "both", target}, wantErr: "--msg-rdma"},
		{name: "bad provider", args: []string{"--msg-rdma", "server-writes", "--msg-provider", "magic", target}, wantErr: `--msg-provider "magic"`},
		{name: "provider alone", args: []string{"--msg-provider", "soft", "-n", "1", target}, wantErr: "--msg-provider needs --msg-rdma"},
		{name: "http target", args: []string{"--msg-rdma", "server-writes", "http://127.0.0.1:1/hello"}, wantErr: "not a msg:// target"},
		{name: "open loop", args: []string{"--msg-rdma", "server-writes", "-R", "100", "-n", "1", target}, wantErr: "closed loop"},
	})
}

// A server too slow for -timeout: each request is counted as timed
// out, not as a reply or a crash, and the run ends on its budget.
func TestMsgRDMATimeouts(t *testing.T) {
	slow := msg.DispatcherFunc(func(m *msg.Message) {
		time.AfterFunc(time.Second, func() { _ = m.SendReply(msg.Reply{Payload: m.Payload}) })
	})
	target, _ := startMsgRDMAServer(t, slow)
	start := time.Now()
	res, err := Run(t.Context(), Config{URL: target, Conns: 1, Pipeline: 2, Requests: 4, Payload: 13,
		MsgRDMA: deliver.ModeServerWrites, MsgProvider: "soft", Timeout: 150 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests != 0 || res.Errors.Timeout != 4 || res.RDMA.ByRDMA != 0 {
		t.Errorf("%d replies, errors %+v, rdma %+v; want 4 timeouts", res.Requests, res.Errors, res.RDMA)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("the run took %v", el)
	}
}
