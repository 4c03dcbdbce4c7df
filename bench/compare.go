package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Load generators of a comparison.
const (
	// GenWrk is wrk 4.1 with one thread, pinned like the generator: the
	// method of issue 15's table, and a client whose cost is known.
	GenWrk = "wrk"
	// GenQuartet is the project's own generator (one loop unless -t says
	// otherwise), which also takes request mixes.
	GenQuartet = "quartet"
)

// CompareSpec is a comparison: each contender under the same load, at
// each connection count, path and mode, in alternating rounds.
type CompareSpec struct {
	Paths  []string
	Conns  []int
	Modes  []CompareMode
	Rounds int
	// Duration and Warmup of each run; wrk rounds both to whole seconds.
	Duration, Warmup time.Duration
	Generator        string
	// Load shapes the project's generator's runs (mix, pipeline,
	// timeout, loops); its URL, connections and durations are set per run.
	Load Config
	// Syscalls is how to count the servers' syscalls per request
	// (SyscallsPerf, SyscallsStrace), "" for not at all; each row is
	// counted after the rounds, over SyscallWindows windows of
	// SyscallWindow each (at least one), the rows' windows taken in turn
	// (syscallsInTurn).
	Syscalls       string
	SyscallWindow  time.Duration
	SyscallWindows int
	// Idle lists idle-connection counts at which to read each server's
	// memory per connection (fresh processes, after the rounds).
	Idle []int
	// Subjects are the servers under study (quartet, quartet-b); the
	// others are the references their ratios are given against.
	Subjects []string
	// Work is a directory for temporary files (default os.TempDir()).
	Work string
	// Log gets one line per run.
	Log io.Writer
}

// CompareSample is one run of one server.
type CompareSample struct {
	Round          int           `json:"round"`
	Requests       uint64        `json:"requests"`
	RequestsPerSec float64       `json:"requests_per_sec"`
	ServerCPU      time.Duration `json:"server_cpu_ns"`
	CPUKnown       bool          `json:"server_cpu_known"`
	// CoreBusy is how long the server's CPUs were not idle (CoreBusy):
	// known in modes that pin the server.
	CoreBusy  time.Duration `json:"server_core_busy_ns,omitempty"`
	CoreKnown bool          `json:"server_core_known,omitempty"`
	P50       time.Duration `json:"p50_ns"`
	P99       time.Duration `json:"p99_ns"`
	// Errors are socket errors and timeouts; Non2xx answers outside 2xx
	// and 3xx.
	Errors uint64 `json:"errors"`
	Non2xx uint64 `json:"non_2xx"`
	// LoadCPU is the load generator's CPU time over the run (wrk's whole
	// process, from wait4; the project's generator's loop threads over
	// the measured window), LoadWall the run's length and LoadThreads the
	// generator's threads that do the work: how busy the generator was
	// (LoadShare). A generator at its cores' limit sets the run's
	// requests/s, whatever the server could give.
	LoadCPU     time.Duration `json:"load_cpu_ns,omitempty"`
	LoadWall    time.Duration `json:"load_wall_ns,omitempty"`
	LoadThreads int           `json:"load_threads,omitempty"`
}

// LoadCPUPerRequest is the load generator's CPU per request in this run,
// 0 when unknown.
func (s CompareSample) LoadCPUPerRequest() time.Duration { return perReq(s.LoadCPU, s.Requests) }

// LoadShare is the share of its threads' cores the load generator used
// over the run (1 is all of them), 0 when unknown.
func (s CompareSample) LoadShare() float64 {
	if s.LoadWall <= 0 || s.LoadThreads <= 0 {
		return 0
	}
	return float64(s.LoadCPU) / float64(s.LoadWall) / float64(s.LoadThreads)
}

// loadBound is the generator's share of its cores from which a run's
// requests/s are taken to be the generator's limit (loadBoundWarnings).
const loadBound = 0.95

// CPUPerRequest is the server's CPU per request in this run.
func (s CompareSample) CPUPerRequest() time.Duration {
	if !s.CPUKnown {
		return 0
	}
	return perReq(s.ServerCPU, s.Requests)
}

// CoreBusyPerRequest is the server's CPUs' busy time per request in this
// run (CoreBusy).
func (s CompareSample) CoreBusyPerRequest() time.Duration {
	if !s.CoreKnown {
		return 0
	}
	return perReq(s.CoreBusy, s.Requests)
}

// CompareRow is one server in one cell (mode, connections, path).
type CompareRow struct {
	Server  string          `json:"server"`
	Mode    string          `json:"mode"`
	Conns   int             `json:"conns"`
	Path    string          `json:"path"`
	Samples []CompareSample `json:"samples"`
	// Medians over the rounds.
	RequestsPerSec     float64       `json:"requests_per_sec"`
	CPUPerRequest      time.Duration `json:"server_cpu_per_request_ns"`
	CoreBusyPerRequest time.Duration `json:"server_core_busy_per_request_ns,omitempty"`
	LoadCPUPerRequest  time.Duration `json:"load_cpu_per_request_ns,omitempty"`
	LoadShare          float64       `json:"load_core_share,omitempty"`
	P50                time.Duration `json:"p50_ns"`
	P99                time.Duration `json:"p99_ns"`
	Errors             uint64        `json:"errors"` // total, all rounds
	Non2xx             uint64        `json:"non_2xx"`
	// CPURatio, CoreRatio and RPSRatio are this row's server CPU per
	// request, its CPUs' busy time per request (pinned) and requests/s
	// over each other server's in the same cell: the median of the
	// per-round ratios (the servers of a round ran back to back, so noise
	// from elsewhere on the machine cancels in pairs).
	CPURatio  map[string]float64 `json:"cpu_ratio,omitempty"`
	CoreRatio map[string]float64 `json:"core_busy_ratio,omitempty"`
	RPSRatio  map[string]float64 `json:"rps_ratio,omitempty"`
	// CPURange, CoreRange and RPSRange say how far the rounds resolve
	// each of those ratios (RatioRange).
	CPURange  map[string]RatioRange `json:"cpu_ratio_range,omitempty"`
	CoreRange map[string]RatioRange `json:"core_busy_ratio_range,omitempty"`
	RPSRange  map[string]RatioRange `json:"rps_ratio_range,omitempty"`
	Syscalls  *SyscallCount         `json:"syscalls,omitempty"`
	Err       string                `json:"error,omitempty"`
}

// cell is a column of the comparison tables.
type cell struct {
	mode  string
	conns int
	path  string
}

func (r *CompareRow) cell() cell { return cell{r.Mode, r.Conns, r.Path} }

// IdleRow is one server's idle memory per connection.
type IdleRow struct {
	Server string      `json:"server"`
	Points []IdlePoint `json:"points"`
	Err    string      `json:"error,omitempty"`
}

// CompareResult is a whole comparison.
type CompareResult struct {
	Started   time.Time     `json:"started"`
	Host      Host          `json:"host"`
	Generator string        `json:"generator"`
	Rounds    int           `json:"rounds"`
	Duration  time.Duration `json:"duration_ns"`
	Warmup    time.Duration `json:"warmup_ns"`
	Modes     []CompareMode `json:"modes"`
	Servers   []string      `json:"servers"`
	// Commits holds the Quartet revision of each server run from a
	// binary with a VCS stamp (Host.Commit is the tool's own).
	Commits  map[string]string `json:"commits,omitempty"`
	Subjects []string          `json:"subjects"`
	Rows     []CompareRow      `json:"rows"`
	Idle     []IdleRow         `json:"idle,omitempty"`
	// MsgServers are the servers measured on the messenger (a msg://
	// URL): their runs are echoes of MsgPayload bytes, one message per
	// request, whatever the path; the others' are HTTP's.
	MsgServers []string `json:"msg_servers,omitempty"`
	MsgPayload int      `json:"msg_payload,omitempty"`
	// SyscallNote says why syscalls were not counted, when they were not.
	SyscallNote string   `json:"syscall_note,omitempty"`
	Warnings    []string `json:"warnings,omitempty"`
}

// Compare runs spec against the contenders. Each contender's server is
// started once per mode and kept for all its runs, and stopped during the
// others' (pausable); servers run one at a time, taking turns within each
// cell, and each round starts the turn one contender later, so that
// neither noise from elsewhere on the machine nor going first favours
// anyone.
func Compare(ctx context.Context, spec CompareSpec, cs []Contender) (*CompareResult, error) {
	spec.Rounds = max(1, spec.Rounds)
	log := spec.Log
	if log == nil {
		log = io.Discard
	}
	if spec.Work == "" {
		spec.Work = os.TempDir()
	}
	switch spec.Generator {
	case GenWrk, GenQuartet:
	default:
		return nil, fmt.Errorf("bench: compare: generator %q: want %s or %s", spec.Generator, GenWrk, GenQuartet)
	}
	res := &CompareResult{Started: time.Now().UTC(), Host: HostInfo(ctx), Generator: spec.Generator,
		Rounds: spec.Rounds, Duration: spec.Duration, Warmup: spec.Warmup, Modes: spec.Modes, Subjects: spec.Subjects}
	fmt.Fprintf(log, "host: %s\n", res.Host)
	for _, c := range cs {
		res.Servers = append(res.Servers, c.Name)
		if c.Commit != "" {
			if res.Commits == nil {
				res.Commits = map[string]string{}
			}
			res.Commits[c.Name] = c.Commit
			fmt.Fprintf(log, "%s: commit %s\n", c.Name, c.Commit)
		}
	}

	type key struct {
		server, mode string
	}
	servers := map[key]Server{}
	startErr := map[key]error{}
	defer func() {
		for _, s := range servers {
			_ = s.Close()
		}
	}()
	server := func(c Contender, m CompareMode) (Server, error) {
		k := key{c.Name, m.Name}
		if s, ok := servers[k]; ok {
			return s, nil
		}
		if err, ok := startErr[k]; ok {
			return nil, err
		}
		s, err := c.Start(ctx, m)
		if err != nil {
			startErr[k] = err
			return nil, err
		}
		servers[k] = s
		fmt.Fprintf(log, "%s (%s) at %s, pid %d\n", c.Name, m.Name, s.URL(), s.PID())
		if IsMsgTarget(s.URL()) && !slices.Contains(res.MsgServers, c.Name) {
			res.MsgServers, res.MsgPayload = append(res.MsgServers, c.Name), spec.Load.Payload
		}
		if !m.pinned() {
			if w := sharedCPUWarning(s, "give --server-pid"); w != "" && !slices.Contains(res.Warnings, m.Name+": "+w) {
				res.Warnings = append(res.Warnings, m.Name+": "+w)
			}
		}
		return s, nil
	}

	// only leaves active the one server running (see pausable). A server
	// that will not pause adds noise, not an error: its own runs say
	// whether it still serves.
	only := func(active key) error {
		for k, s := range servers {
			if p, ok := s.(pausable); ok && k != active {
				_ = p.Pause()
			}
		}
		if p, ok := servers[active].(pausable); ok {
			return p.Resume()
		}
		return nil
	}

	// what names what a row's runs send, in the progress lines: a
	// messenger server's runs are echoes whatever the path. A server that
	// never started is not known to speak the messenger, so its failure
	// names the path.
	what := func(server, path string) string {
		if slices.Contains(res.MsgServers, server) {
			return msgEchoWhat(res.MsgPayload)
		}
		return path
	}

	idx := map[string]int{}
	rowKey := func(server string, c cell) string { return fmt.Sprint(server, "|", c.mode, "|", c.conns, "|", c.path) }
	for _, c := range cs {
		for _, m := range spec.Modes {
			for _, n := range spec.Conns {
				for _, p := range spec.Paths {
					idx[rowKey(c.Name, cell{m.Name, n, p})] = len(res.Rows)
					res.Rows = append(res.Rows, CompareRow{Server: c.Name, Mode: m.Name, Conns: n, Path: p})
				}
			}
		}
	}
	total := spec.Rounds * len(spec.Modes) * len(spec.Conns) * len(spec.Paths) * len(cs)
	done := 0
	for round := range spec.Rounds {
		for _, m := range spec.Modes {
			for _, n := range spec.Conns {
				for _, p := range spec.Paths {
					for i := range cs {
						c := cs[(i+round)%len(cs)]
						row := &res.Rows[idx[rowKey(c.Name, cell{m.Name, n, p})]]
						done++
						srv, err := server(c, m)
						if err != nil {
							row.Err = err.Error()
							fmt.Fprintf(log, "[%d/%d] %s %s c=%d %s: %v\n", done, total, c.Name, m.Name, n, what(c.Name, p), err)
							continue
						}
						err = only(key{c.Name, m.Name})
						var s CompareSample
						if err == nil {
							s, err = measure(ctx, spec, srv, m, n, p)
						}
						if err != nil {
							if ctx.Err() != nil {
								return res, ctx.Err()
							}
							row.Err = err.Error()
							fmt.Fprintf(log, "[%d/%d] %s %s c=%d %s: %v\n", done, total, c.Name, m.Name, n, what(c.Name, p), err)
							continue
						}
						s.Round = round
						row.Samples = append(row.Samples, s)
						fmt.Fprintf(log, "[%d/%d] %s %s c=%d %s: %.0f req/s, server CPU %v/request, p99 %v\n",
							done, total, c.Name, m.Name, n, what(c.Name, p), s.RequestsPerSec, s.CPUPerRequest(), s.P99)
					}
				}
			}
		}
	}
	res.summarise()
	res.Warnings = append(res.Warnings, res.loadBoundWarnings()...)
	for _, row := range res.Rows {
		if row.Errors > 0 || row.Non2xx > 0 {
			res.Warnings = append(res.Warnings, fmt.Sprintf("%s %s c=%d %s: %d errors and %d responses outside 2xx/3xx: its figures are not those of serving the request",
				row.Server, row.Mode, row.Conns, what(row.Server, row.Path), row.Errors, row.Non2xx))
		}
	}

	if spec.Syscalls != "" {
		counts, err := syscallsInTurn(len(res.Rows), spec.SyscallWindows, func(i int) (*SyscallCount, error) {
			row := &res.Rows[i]
			srv, ok := servers[key{row.Server, row.Mode}]
			if !ok {
				return nil, nil
			}
			err := only(key{row.Server, row.Mode})
			var sc *SyscallCount
			if err == nil {
				sc, err = measureSyscalls(ctx, spec, srv, modeNamed(spec.Modes, row.Mode), row.Conns, row.Path)
			}
			if err != nil {
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				fmt.Fprintf(log, "syscalls of %s %s c=%d %s: %v\n", row.Server, row.Mode, row.Conns, what(row.Server, row.Path), err)
				return nil, nil
			}
			return sc, nil
		})
		if err != nil {
			return res, err
		}
		for i, sc := range counts {
			if sc == nil {
				continue
			}
			row := &res.Rows[i]
			row.Syscalls = sc
			fmt.Fprintf(log, "syscalls of %s %s c=%d %s: %.2f per request, windows %s (%s, traced %.0f req/s, untraced %.0f)\n",
				row.Server, row.Mode, row.Conns, what(row.Server, row.Path), sc.PerRequest, figures(sc.Windows), sc.Method, sc.TracedRPS, sc.UntracedRPS)
		}
	}
	// The idle experiment wants fresh processes with nothing else running.
	for _, s := range servers {
		_ = s.Close()
	}
	clear(servers)
	if len(spec.Idle) > 0 {
		for _, c := range cs {
			res.Idle = append(res.Idle, idleRow(ctx, c, spec.Idle, spec.Paths[0], log))
			if ctx.Err() != nil {
				return res, ctx.Err()
			}
		}
	}
	return res, nil
}

func modeNamed(ms []CompareMode, name string) CompareMode {
	for _, m := range ms {
		if m.Name == name {
			return m
		}
	}
	return CompareMode{Name: name}
}

// pausable is a server the comparison can stop while it measures another
// (procServer: SIGSTOP to it and its children). Idle is not quiet: the
// sendfile peer, whose loops block in raw system calls, took 6-10 ms of
// CPU a second in sysmon's preemption signals (December 2026, a 2-core
// guest), gnet 0.45, Quartet's control loop 0.4; pinned beside the
// measured server, that landed on its CPU, in its core's busy time, and
// between its system calls.
type pausable interface {
	Pause() error
	Resume() error
}

// measure is one run of the spec's generator against srv.
func measure(ctx context.Context, spec CompareSpec, srv Server, m CompareMode, conns int, path string) (CompareSample, error) {
	url := targetURL(srv, path)
	cpuKnown := srv.PID() > 0 && !isInProcess(srv)
	// Where the server has CPUs of its own, what they did besides its
	// process counts too (CoreBusy).
	var cores []int
	if m.ServerCPUs != "" {
		cores, _ = parseCPUList(m.ServerCPUs)
	}
	if spec.Generator == GenWrk {
		if IsMsgTarget(url) {
			return CompareSample{}, fmt.Errorf("%s: wrk speaks HTTP, not the messenger (--gen quartet)", url)
		}
		w := WrkConfig{URL: url, Conns: conns, Threads: 1, CPUs: m.LoadCPUs}
		if spec.Warmup > 0 {
			w.Duration = spec.Warmup
			if _, err := RunWrk(ctx, w); err != nil {
				return CompareSample{}, fmt.Errorf("warm-up: %w", err)
			}
		}
		w.Duration = spec.Duration
		// The CPU read brackets wrk's whole run, its connects included: at
		// 1000 connections those are well under 1% of the requests.
		c0 := srv.CPU()
		b0, coreErr := CoreBusy(cores)
		start := time.Now()
		r, err := RunWrk(ctx, w)
		wall := time.Since(start)
		c1 := srv.CPU()
		b1, coreErr1 := CoreBusy(cores)
		if err != nil {
			return CompareSample{}, err
		}
		return CompareSample{Requests: r.Requests, RequestsPerSec: r.RequestsPerSec, ServerCPU: c1 - c0, CPUKnown: cpuKnown,
			CoreBusy: b1 - b0, CoreKnown: len(cores) > 0 && coreErr == nil && coreErr1 == nil,
			P50: r.P50, P99: r.P99, Errors: r.SocketErrors, Non2xx: r.Non2xx,
			LoadCPU: r.CPU, LoadWall: wall, LoadThreads: w.Threads}, nil
	}
	cfg := spec.Load
	cfg.URL, cfg.Conns, cfg.Duration, cfg.Warmup = url, conns, spec.Duration, spec.Warmup
	if cfg.Loops == 0 {
		cfg.Loops = 1 // as wrk -t1
	}
	cfg.ServerPID, cfg.ServerCPU, cfg.ServerInProcess = 0, nil, isInProcess(srv)
	if cpuKnown {
		cfg.ServerCPU = srv.CPU
	}
	cfg.ServerBusy = nil
	if len(cores) > 0 {
		if _, err := CoreBusy(cores); err == nil {
			cfg.ServerBusy = func() time.Duration { d, _ := CoreBusy(cores); return d }
		}
	}
	if m.LoadCPUs != "" {
		cpus, err := parseCPUList(m.LoadCPUs)
		if err != nil {
			return CompareSample{}, err
		}
		restore, err := pinSelf(cpus)
		if err != nil {
			return CompareSample{}, err
		}
		defer restore()
	}
	r, err := Run(ctx, cfg)
	if err != nil {
		return CompareSample{}, err
	}
	non2xx := r.Requests - r.Status[2] - r.Status[3]
	if r.Protocol == protoMsg {
		non2xx = 0 // no status: error frames and mismatched replies are among the errors
	}
	return CompareSample{Requests: r.Requests, RequestsPerSec: r.RequestsPerSec, ServerCPU: r.ServerCPU,
		CPUKnown: r.ServerCPUKnown, CoreBusy: r.ServerBusy, CoreKnown: r.ServerBusyKnown,
		P50: r.Latency.P50, P99: r.Latency.P99, Errors: r.ErrorTotal(),
		Non2xx: non2xx, LoadCPU: r.ClientCPU, LoadWall: r.Elapsed, LoadThreads: r.Loops}, nil
}

// msgEchoWhat names a messenger run's load: the echo of payload bytes.
func msgEchoWhat(payload int) string { return fmt.Sprintf("echo of %d bytes", payload) }

// figures prints vs to two places each, space-separated.
func figures(vs []float64) string {
	var b strings.Builder
	for i, v := range vs {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%.2f", v)
	}
	return b.String()
}

// targetURL is what a run against srv loads: path on an HTTP server; a
// messenger server (msg://) has no paths, and its runs send the echo.
func targetURL(srv Server, path string) string {
	if IsMsgTarget(srv.URL()) {
		return srv.URL()
	}
	return strings.TrimRight(srv.URL(), "/") + path
}

// measureSyscalls counts srv's syscalls per request in the row's cell,
// over one window.
func measureSyscalls(ctx context.Context, spec CompareSpec, srv Server, m CompareMode, conns int, path string) (*SyscallCount, error) {
	load := spec.Load
	load.URL, load.Conns = targetURL(srv, path), conns
	if load.Loops == 0 {
		load.Loops = 1
	}
	var cpus []int
	if m.LoadCPUs != "" {
		var err error
		if cpus, err = parseCPUList(m.LoadCPUs); err != nil {
			return nil, err
		}
	}
	return countSyscalls(ctx, spec.Syscalls, srv, load, spec.SyscallWindow, cpus, spec.Work)
}

// idleRow measures c's memory per idle connection in a fresh process.
func idleRow(ctx context.Context, c Contender, counts []int, path string, log io.Writer) IdleRow {
	row := IdleRow{Server: c.Name}
	if c.StartIdle == nil {
		row.Err = "no idle start"
		return row
	}
	s, err := c.StartIdle(ctx)
	if err != nil {
		row.Err = err.Error()
		return row
	}
	defer s.Close()
	pts, err := Idle(ctx, IdleConfig{URL: strings.TrimRight(s.URL(), "/") + path, Counts: counts, PID: s.PID(), RSS: serverRSS(s), Log: log})
	row.Points = pts
	if err != nil {
		row.Err = err.Error()
	}
	return row
}

// summarise fills the medians and the paired ratios.
func (r *CompareResult) summarise() {
	byCell := map[cell][]int{}
	for i := range r.Rows {
		row := &r.Rows[i]
		byCell[row.cell()] = append(byCell[row.cell()], i)
		var rps, cpu, core, load, share, p50, p99 []float64
		row.Errors, row.Non2xx = 0, 0
		for _, s := range row.Samples {
			rps = append(rps, s.RequestsPerSec)
			if s.CPUKnown {
				cpu = append(cpu, float64(s.CPUPerRequest()))
			}
			if s.CoreKnown {
				core = append(core, float64(s.CoreBusyPerRequest()))
			}
			if sh := s.LoadShare(); sh > 0 {
				load = append(load, float64(s.LoadCPUPerRequest()))
				share = append(share, sh)
			}
			p50 = append(p50, float64(s.P50))
			p99 = append(p99, float64(s.P99))
			row.Errors += s.Errors
			row.Non2xx += s.Non2xx
		}
		row.RequestsPerSec = median(rps)
		row.CPUPerRequest = time.Duration(median(cpu))
		row.CoreBusyPerRequest = time.Duration(median(core))
		row.LoadCPUPerRequest, row.LoadShare = time.Duration(median(load)), median(share)
		row.P50, row.P99 = time.Duration(median(p50)), time.Duration(median(p99))
	}
	for _, members := range byCell {
		for _, i := range members {
			a := &r.Rows[i]
			a.CPURatio, a.CoreRatio, a.RPSRatio = map[string]float64{}, map[string]float64{}, map[string]float64{}
			a.CPURange, a.CoreRange, a.RPSRange = map[string]RatioRange{}, map[string]RatioRange{}, map[string]RatioRange{}
			for _, j := range members {
				if i == j {
					continue
				}
				b := &r.Rows[j]
				pair := func(ratios map[string]float64, ranges map[string]RatioRange, val func(CompareSample) (float64, bool)) {
					rs := pairedRatios(a.Samples, b.Samples, val)
					if len(rs) == 0 {
						return
					}
					ratios[b.Server] = median(rs)
					if rr, ok := medianRange(rs, ratioRangeCoverage); ok {
						ranges[b.Server] = rr
					}
				}
				pair(a.CPURatio, a.CPURange, func(s CompareSample) (float64, bool) {
					return float64(s.CPUPerRequest()), s.CPUKnown
				})
				pair(a.CoreRatio, a.CoreRange, func(s CompareSample) (float64, bool) {
					return float64(s.CoreBusyPerRequest()), s.CoreKnown
				})
				pair(a.RPSRatio, a.RPSRange, func(s CompareSample) (float64, bool) {
					return s.RequestsPerSec, true
				})
			}
		}
	}
}

// loadBoundWarnings names the cells where the load generator used
// loadBound or more of its cores for every server: there the requests/s,
// and their ratios, are the generator's limit, and the servers' CPU per
// request is the figure that tells them apart.
func (r *CompareResult) loadBoundWarnings() []string {
	var out []string
	for _, c := range r.cells() {
		lo, hi, n := 2.0, 0.0, 0
		for _, s := range r.Servers {
			row := r.row(s, c)
			if row == nil || len(row.Samples) == 0 {
				continue
			}
			n++
			lo, hi = min(lo, row.LoadShare), max(hi, row.LoadShare)
		}
		if n > 1 && lo >= loadBound {
			out = append(out, fmt.Sprintf("%s c=%d %s: the load generator was %.0f-%.0f%% busy against every server: requests/s there are its limit, not the servers'",
				c.mode, c.conns, c.path, 100*lo, 100*hi))
		}
	}
	return out
}

// pairedRatios are a's values over b's, one for each round both have.
func pairedRatios(a, b []CompareSample, val func(CompareSample) (float64, bool)) []float64 {
	var rs []float64
	for _, sa := range a {
		for _, sb := range b {
			if sa.Round != sb.Round {
				continue
			}
			va, oka := val(sa)
			vb, okb := val(sb)
			if oka && okb && vb > 0 {
				rs = append(rs, va/vb)
			}
		}
	}
	return rs
}

// RatioRange is how far the rounds resolve a median of per-round ratios:
// the two per-round ratios, counted in from each end, that hold the
// median of the ratios' distribution between them with probability
// Coverage, whatever that distribution (the sign test's interval: each
// round's ratio falls below the true median with probability one half,
// so how many do is binomial). Where Lo ≤ 1 ≤ Hi the rounds do not tell
// the two servers apart; more rounds narrow it.
type RatioRange struct {
	Lo       float64 `json:"lo"`
	Hi       float64 `json:"hi"`
	Coverage float64 `json:"coverage"`
	Rounds   int     `json:"rounds"` // the paired rounds it comes from
}

// ratioRangeCoverage is the least coverage medianRange aims for: 90%,
// which eight rounds can give (93% between the second and seventh
// ratios) where 95% would take all eight, the widest possible.
const ratioRangeCoverage = 0.90

// medianRange is the narrowest RatioRange of xs with at least the
// coverage asked for, or, when there are too few values for that, the
// widest (the least and the most) with the coverage it has; ok is false
// for fewer than two values.
func medianRange(xs []float64, coverage float64) (RatioRange, bool) {
	n := len(xs)
	if n < 2 {
		return RatioRange{}, false
	}
	s := slices.Clone(xs)
	sort.Float64s(s)
	// The interval from the k-th least to the k-th most value misses the
	// median when fewer than k values fall on one side of it:
	// 1 - 2·P(B ≤ k-1) for B ~ Binomial(n, 1/2).
	cover := func(k int) float64 { return 1 - 2*binomialHalfCDF(n, k-1) }
	k := 1
	for k+1 <= n/2 && cover(k+1) >= coverage {
		k++
	}
	return RatioRange{Lo: s[k-1], Hi: s[n-k], Coverage: cover(k), Rounds: n}, true
}

// binomialHalfCDF is P(B ≤ j) for B ~ Binomial(n, 1/2).
func binomialHalfCDF(n, j int) float64 {
	if j < 0 {
		return 0
	}
	sum := 0.0
	lc, _ := math.Lgamma(float64(n + 1))
	for i := 0; i <= min(j, n); i++ {
		li, _ := math.Lgamma(float64(i + 1))
		lr, _ := math.Lgamma(float64(n - i + 1))
		sum += math.Exp(lc - li - lr - float64(n)*math.Ln2)
	}
	return min(sum, 1)
}

// median of xs (the mean of the middle two for an even count), 0 for none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	sort.Float64s(s)
	if n := len(s); n%2 == 0 {
		return (s[n/2-1] + s[n/2]) / 2
	}
	return s[len(s)/2]
}

// urlServer is a server the tool did not start.
type urlServer struct {
	url string
	pid int
}

func (u urlServer) URL() string  { return u.url }
func (u urlServer) PID() int     { return u.pid }
func (u urlServer) Close() error { return nil }
func (u urlServer) CPU() time.Duration {
	if u.pid <= 0 {
		return 0
	}
	d, _ := ProcCPU(u.pid)
	return d
}

// baseURL strips the path from a URL given on the command line.
func baseURL(raw string) (base, path string, err error) {
	t, err := parseTarget(raw)
	if err != nil {
		return "", "", err
	}
	return "http://" + t.host, t.path, nil
}

// parseInts parses "100,1000".
func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return nil, usagef("bench: count %q: want a whole number above 0", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// RequireFDs checks that the largest connection count fits the open-file
// limit (raising it where allowed) and says so clearly where it does not.
func RequireFDs(conns []int) error {
	most := 0
	for _, c := range conns {
		most = max(most, c)
	}
	_, err := RaiseFDLimit(uint64(most) + 64)
	return err
}

// errNoSubject is returned when a comparison has nothing to compare.
var errNoSubject = errors.New("bench: compare: no servers to compare")
