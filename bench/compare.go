package bench

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// NamedServer is one column of a comparison.
type NamedServer struct {
	Name string
	Server
}

// CompareRow is one server at one connection count.
type CompareRow struct {
	Server string `json:"server"`
	Conns  int    `json:"conns"`
	// Result is the median run by requests/s over the repeats.
	Result *Result `json:"result"`
	// Runs holds requests/s of every repeat, in run order.
	Runs []float64 `json:"runs_requests_per_sec"`
	// Ratio is this row's requests/s over the first server's (Quartet's)
	// at the same connection count.
	Ratio float64 `json:"ratio_to_first"`
	Err   string  `json:"error,omitempty"`
}

// Compare runs load against each server in turn (never two at once, so
// they do not compete for the cores) at each connection count; path is the
// request path when load.Mix is empty. With several repeats the servers
// take turns within each repeat, so that a burst of noise from elsewhere
// on the machine hits them alike, and each row keeps the median run. The
// first server is the reference for the ratios.
func Compare(ctx context.Context, load Config, path string, conns []int, servers []NamedServer, repeats int) ([]CompareRow, error) {
	repeats = max(1, repeats)
	type key struct {
		server string
		conns  int
	}
	runs := map[key][]*Result{}
	rows := []CompareRow{}
	idx := map[key]int{}
	for _, s := range servers {
		for _, c := range conns {
			idx[key{s.Name, c}] = len(rows)
			rows = append(rows, CompareRow{Server: s.Name, Conns: c})
		}
	}
	for range repeats {
		for _, c := range conns {
			for _, s := range servers {
				cfg := load
				cfg.URL = strings.TrimRight(s.URL(), "/") + path
				cfg.Conns = c
				cfg.ServerPID = 0
				cfg.ServerCPU, cfg.ServerInProcess = s.CPU, false
				if isInProcess(s.Server) {
					cfg.ServerCPU, cfg.ServerInProcess = nil, true
				}
				res, err := Run(ctx, cfg)
				k := key{s.Name, c}
				if err != nil {
					if ctx.Err() != nil {
						return rows, ctx.Err()
					}
					rows[idx[k]].Err = err.Error()
				}
				if res != nil {
					runs[k] = append(runs[k], res)
					rows[idx[k]].Runs = append(rows[idx[k]].Runs, res.RequestsPerSec)
				}
			}
		}
	}
	for k, rs := range runs {
		sorted := append([]*Result(nil), rs...)
		sort.Slice(sorted, func(i, j int) bool { return sorted[i].RequestsPerSec < sorted[j].RequestsPerSec })
		rows[idx[k]].Result = sorted[len(sorted)/2]
	}
	for i, r := range rows {
		ref := rows[idx[key{servers[0].Name, r.Conns}]].Result
		if r.Result != nil && ref != nil && ref.RequestsPerSec > 0 {
			rows[i].Ratio = r.Result.RequestsPerSec / ref.RequestsPerSec
		}
	}
	return rows, nil
}

// WriteCompareText prints rows as a table.
func WriteCompareText(w io.Writer, rows []CompareRow) error {
	ew := &errWriter{w: w}
	ew.printf("%-10s %6s %12s %8s %10s %10s %10s %12s %12s %7s  %s\n",
		"server", "conns", "req/s", "ratio", "p50", "p99", "p99.9", "srv CPU/req", "cli CPU/req", "errors", "runs (req/s)")
	for _, r := range rows {
		if r.Result == nil {
			ew.printf("%-10s %6d  failed: %s\n", r.Server, r.Conns, r.Err)
			continue
		}
		res := r.Result
		runs := make([]string, len(r.Runs))
		for i, v := range r.Runs {
			runs[i] = strconv.FormatFloat(v, 'f', 0, 64)
		}
		ew.printf("%-10s %6d %12.0f %8.2f %10v %10v %10v %12v %12v %7d  %s\n", r.Server, r.Conns,
			res.RequestsPerSec, r.Ratio, res.Latency.P50, res.Latency.P99, res.Latency.P999,
			res.ServerCPUPerRequest(), res.ClientCPUPerRequest(), res.ErrorTotal(), strings.Join(runs, " "))
		if r.Err != "" {
			ew.printf("%-10s %6d  error: %s\n", "", r.Conns, r.Err)
		}
	}
	return ew.err
}

// WriteCompareCSV prints rows as CSV: server, conns, ratio, then CSVHeader.
func WriteCompareCSV(w io.Writer, rows []CompareRow) error {
	cw := csv.NewWriter(w)
	_ = cw.Write(append([]string{"server", "conns_point", "ratio"}, CSVHeader()...))
	for _, r := range rows {
		if r.Result == nil {
			continue
		}
		_ = cw.Write(append([]string{r.Server, strconv.Itoa(r.Conns), strconv.FormatFloat(r.Ratio, 'f', 3, 64)}, r.Result.CSVRecord()...))
	}
	cw.Flush()
	return cw.Error()
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
			return nil, fmt.Errorf("bench: bad count %q", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// compareMain is `quartet bench compare [flags] [QUARTET-URL]`.
func compareMain(ctx context.Context, args []string, env Env) error {
	fs := flag.NewFlagSet("bench compare", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	var f loadFlags
	f.register(fs)
	connList := fs.String("conns", "", "connection counts to run each server at, e.g. 100,1000 (default: -c)")
	path := fs.String("path", "/hello", "request path (without -m)")
	peersDir := fs.String("peers", "", "directory of the bench/peers module (default: found from the working directory)")
	repeats := fs.Int("repeats", 1, "runs per server and count, taking turns; the median is reported")
	only := fs.String("only", strings.Join(peerNames, ","), "peers to run")
	peerBin := fs.String("peer-bin", "", "directory of already built peer binaries (skips building)")
	fs.Usage = func() {
		fmt.Fprintln(env.Stderr, "usage: quartet bench compare [flags] [QUARTET-URL]\n\nRuns the same load against Quartet and the peers in bench/peers, one at a time, all on loopback.\nWithout QUARTET-URL, Quartet is started as `quartet serve` (or in-process).")
		fs.PrintDefaults()
	}
	// Comparisons run several servers: default to short runs.
	_ = fs.Set("d", "3s")
	_ = fs.Set("w", "500ms")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return helpIsNotAnError(err)
	}
	if len(pos) > 1 {
		fs.Usage()
		return errUsage
	}
	conns := []int{f.cfg.Conns}
	if *connList != "" {
		if conns, err = parseInts(*connList); err != nil {
			return err
		}
	}
	if err := RequireFDs(conns); err != nil {
		return err
	}

	var servers []NamedServer
	defer func() {
		for _, s := range servers {
			_ = s.Close()
		}
	}()
	reqPath := *path
	switch {
	case len(pos) == 1:
		base, p, err := baseURL(pos[0])
		if err != nil {
			return err
		}
		if p != "/" {
			reqPath = p
		}
		servers = append(servers, NamedServer{"quartet", urlServer{url: base, pid: f.cfg.ServerPID}})
	case env.QuartetBinary != "":
		s, err := StartProcess(ctx, "quartet", quartetArgs(env.QuartetBinary, ServerParams{}))
		if err != nil {
			return err
		}
		servers = append(servers, NamedServer{"quartet", s})
	case env.Quartet != nil:
		s, err := env.Quartet(ctx, ServerParams{})
		if err != nil {
			return err
		}
		servers = append(servers, NamedServer{"quartet", s})
	default:
		return errors.New("bench compare: give Quartet's URL (no Quartet server is linked in)")
	}
	if err := f.finish(servers[0].URL() + reqPath); err != nil {
		return err
	}

	bin := *peerBin
	if bin == "" {
		dir := *peersDir
		if dir == "" {
			wd, _ := os.Getwd()
			if dir, err = FindPeersDir(wd); err != nil {
				return err
			}
		}
		fmt.Fprintf(env.Stderr, "building peers in %s\n", dir)
		if bin, err = BuildPeers(ctx, dir); err != nil {
			return err
		}
		defer os.RemoveAll(bin)
	}
	for _, name := range strings.Split(*only, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		s, err := StartProcess(ctx, name, []string{filepath.Join(bin, name), "-addr", "127.0.0.1:0"})
		if err != nil {
			return err
		}
		servers = append(servers, NamedServer{name, s})
	}
	for _, s := range servers {
		fmt.Fprintf(env.Stderr, "%-9s %s\n", s.Name, s.URL())
	}
	if !isInProcess(servers[0].Server) {
		spareProcs(f.cfg.withDefaults().Loops)
	}
	rows, err := Compare(ctx, f.cfg, reqPath, conns, servers, *repeats)
	if err != nil {
		return err
	}
	switch {
	case f.jsonOut:
		e := json.NewEncoder(env.Stdout)
		e.SetIndent("", "  ")
		return e.Encode(rows)
	case f.csvOut:
		return WriteCompareCSV(env.Stdout, rows)
	}
	return WriteCompareText(env.Stdout, rows)
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
