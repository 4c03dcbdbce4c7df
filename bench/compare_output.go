package bench

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// table is a text table: the first column left-aligned, the others right.
type table struct {
	rows [][]string
}

func (t *table) add(cells ...string) { t.rows = append(t.rows, cells) }

func (t *table) write(ew *errWriter) {
	var widths []int
	for _, r := range t.rows {
		for i, c := range r {
			if i >= len(widths) {
				widths = append(widths, 0)
			}
			widths[i] = max(widths[i], utf8.RuneCountInString(c))
		}
	}
	for _, r := range t.rows {
		var b strings.Builder
		for i, c := range r {
			pad := strings.Repeat(" ", widths[i]-utf8.RuneCountInString(c))
			if i == 0 {
				b.WriteString(c + pad)
			} else {
				b.WriteString("  " + pad + c)
			}
		}
		ew.printf("%s\n", strings.TrimRight(b.String(), " "))
	}
}

// cells are the comparison's columns in order: modes, then connection
// counts, then paths.
func (r *CompareResult) cells() []cell {
	var out []cell
	seen := map[cell]bool{}
	for _, row := range r.Rows {
		if c := row.cell(); !seen[c] {
			seen[c] = true
			out = append(out, c)
		}
	}
	return out
}

func (r *CompareResult) row(server string, c cell) *CompareRow {
	for i := range r.Rows {
		if r.Rows[i].Server == server && r.Rows[i].cell() == c {
			return &r.Rows[i]
		}
	}
	return nil
}

// header names the columns: "c=100 pinned", and the path when several.
func (r *CompareResult) header(first string, cells []cell) []string {
	paths := map[string]bool{}
	for _, c := range cells {
		paths[c.path] = true
	}
	h := []string{first}
	for _, c := range cells {
		s := fmt.Sprintf("c=%d %s", c.conns, c.mode)
		if len(paths) > 1 {
			s += " " + c.path
		}
		h = append(h, s)
	}
	return h
}

// ratioPairs are the (subject, reference) pairs the tables give ratios
// for: each subject against every other server that is not a later
// subject, so quartet-b is also held against quartet (before/after).
func (r *CompareResult) ratioPairs() [][2]string {
	var out [][2]string
	for si, s := range r.Subjects {
		if !slices.Contains(r.Servers, s) {
			continue
		}
		for _, o := range r.Servers {
			if o == s {
				continue
			}
			if j := slices.Index(r.Subjects, o); j >= si {
				continue
			}
			out = append(out, [2]string{s, o})
		}
	}
	return out
}

func usString(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/1e3, 'f', 1, 64) + "µs"
}

// WriteText prints the comparison as issue 15's table (server CPU per
// request and Quartet's ratios), then throughput, p99, syscalls, idle
// memory and every run.
func (r *CompareResult) WriteText(w io.Writer) error {
	ew := &errWriter{w: w}
	cells := r.cells()
	gen := "wrk 4.1 with one thread"
	if r.Generator == GenQuartet {
		gen = "the project's generator"
	}
	var paths []string
	for _, c := range cells {
		if !slices.Contains(paths, c.path) {
			paths = append(paths, c.path)
		}
	}
	switch {
	case len(r.MsgServers) == 0:
		ew.printf("GET %s keep-alive, %s, %d alternating round(s) of %v after %v warm-up; medians.\n",
			strings.Join(paths, ", "), gen, r.Rounds, r.Duration, r.Warmup)
	case len(r.MsgServers) == len(r.Servers):
		ew.printf("Messenger echo of %d bytes (a request is a message), %s, %d alternating round(s) of %v after %v warm-up; medians.\n",
			r.MsgPayload, gen, r.Rounds, r.Duration, r.Warmup)
	default:
		var http []string
		for _, s := range r.Servers {
			if !slices.Contains(r.MsgServers, s) {
				http = append(http, s)
			}
		}
		ew.printf("Messenger echo of %d bytes on %s (a request is a message) and GET %s keep-alive on %s, %s, %d alternating round(s) of %v after %v warm-up; medians.\n",
			r.MsgPayload, strings.Join(r.MsgServers, ", "), strings.Join(paths, ", "), strings.Join(http, ", "), gen, r.Rounds, r.Duration, r.Warmup)
	}
	ew.printf("Host: %s.\n", r.Host)
	if len(r.Commits) > 0 {
		var built []string
		for _, s := range r.Servers {
			if c, ok := r.Commits[s]; ok {
				built = append(built, s+" "+c)
			}
		}
		ew.printf("Quartet binaries measured, by commit: %s.\n", strings.Join(built, ", "))
	}
	for _, m := range r.Modes {
		switch {
		case m.pinned():
			ew.printf("Mode %s: server on CPU %s with GOMAXPROCS=%d (nginx: %[3]d worker), load generator on CPU %[4]s.\n", m.Name, m.ServerCPUs, m.Procs, m.LoadCPUs)
		default:
			ew.printf("Mode %s: nothing pinned, each server with its default parallelism.\n", m.Name)
		}
	}
	ew.printf("Each run has its server to itself: the tool stops the other servers it started (SIGSTOP) until their own runs.\n")
	for _, warn := range r.Warnings {
		ew.printf("Warning: %s\n", warn)
	}

	rangesNoted := false
	metric := func(title string, get func(*CompareRow) string, ratio func(*CompareRow) (map[string]float64, map[string]RatioRange)) {
		ew.printf("\n%s\n", title)
		t := &table{}
		t.add(r.header("server", cells)...)
		for _, s := range r.Servers {
			line := []string{s}
			for _, c := range cells {
				row := r.row(s, c)
				switch {
				case row == nil:
					line = append(line, "")
				case len(row.Samples) == 0:
					line = append(line, "failed")
				default:
					line = append(line, get(row))
				}
			}
			t.add(line...)
		}
		if ratio == nil {
			t.write(ew)
			return
		}
		coverage := map[int]float64{} // by rounds
		for _, p := range r.ratioPairs() {
			line := []string{p[0] + " / " + p[1]}
			for _, c := range cells {
				v := ""
				if row := r.row(p[0], c); row != nil {
					ratios, ranges := ratio(row)
					if x, ok := ratios[p[1]]; ok {
						v = fmt.Sprintf("%.2f×", x)
					}
					if rr, ok := ranges[p[1]]; ok && v != "" {
						v += fmt.Sprintf(" [%.2f-%.2f]", rr.Lo, rr.Hi)
						coverage[rr.Rounds] = rr.Coverage
					}
				}
				line = append(line, v)
			}
			t.add(line...)
		}
		t.write(ew)
		if len(coverage) > 0 && !rangesNoted {
			rangesNoted = true
			var by []string
			for _, n := range slices.Sorted(maps.Keys(coverage)) {
				by = append(by, fmt.Sprintf("%.0f%% from %d rounds", 100*coverage[n], n))
			}
			ew.printf("In brackets, here and below: the per-round ratios that hold the median ratio between them (%s, whatever the rounds' spread); where they hold 1.00 the rounds do not tell the two apart.\n",
				strings.Join(by, ", "))
		}
	}
	// perRequest shows a time per request, unknown (0) as blank.
	perRequest := func(blank string, get func(*CompareRow) time.Duration) func(*CompareRow) string {
		return func(row *CompareRow) string {
			if d := get(row); d != 0 {
				return usString(d)
			}
			return blank
		}
	}
	metric("Server CPU per request (user+sys from /proc/PID/stat over each measured run; ratios are medians of per-round ratios)",
		perRequest("?", func(row *CompareRow) time.Duration { return row.CPUPerRequest }),
		func(row *CompareRow) (map[string]float64, map[string]RatioRange) { return row.CPURatio, row.CPURange })
	if r.anyRow(func(row *CompareRow) bool { return row.CoreBusyPerRequest > 0 }) {
		metric("Server CPU busy per request, pinned modes (the server's CPUs not idle, from /proc/stat: its process and the kernel's work done there in its idle time, which /proc/PID/stat charges to no one)",
			perRequest("", func(row *CompareRow) time.Duration { return row.CoreBusyPerRequest }),
			func(row *CompareRow) (map[string]float64, map[string]RatioRange) { return row.CoreRatio, row.CoreRange })
	}
	if r.anyRow(func(row *CompareRow) bool { return row.LoadShare > 0 }) {
		metric("Load generator CPU per request, and in brackets its share of its core (at 95% or more the generator, not the server, set the requests/s)",
			func(row *CompareRow) string {
				if row.LoadShare == 0 {
					return ""
				}
				return fmt.Sprintf("%s (%.0f%%)", usString(row.LoadCPUPerRequest), 100*row.LoadShare)
			}, nil)
	}
	metric("Requests/s", func(row *CompareRow) string { return strconv.FormatFloat(row.RequestsPerSec, 'f', 0, 64) },
		func(row *CompareRow) (map[string]float64, map[string]RatioRange) { return row.RPSRatio, row.RPSRange })
	metric("p99 latency", func(row *CompareRow) string { return row.P99.Round(time.Microsecond).String() }, nil)

	if r.SyscallNote != "" {
		ew.printf("\nSyscalls per request: not counted (%s).\n", r.SyscallNote)
	} else if sc := r.anySyscalls(); sc != nil {
		how := "perf stat -e raw_syscalls:sys_enter (in-kernel counting, every thread)"
		if sc.Method == SyscallsStrace {
			how = "strace -c -f (ptrace: the server runs much slower while counted)"
		}
		ew.printf("\nSyscalls per request: %s over %d windows of %v of load by the project's generator (one loop, its connections opened before counting), each server's first window, then each one's second, and so on, so that a noisy spell on the machine falls on every server: all of them together, the least and the most of one window, and in brackets the server's throughput while counted over just before\n",
			how, max(len(sc.Windows), 1), (sc.Window / time.Duration(max(len(sc.Windows), 1))).Round(100*time.Millisecond))
		t := &table{}
		t.add(r.header("server", cells)...)
		for _, s := range r.Servers {
			line := []string{s}
			for _, c := range cells {
				v := ""
				if row := r.row(s, c); row != nil && row.Syscalls != nil {
					lo, hi := row.Syscalls.Spread()
					v = fmt.Sprintf("%.2f [%.2f-%.2f] (%.2f×)", row.Syscalls.PerRequest, lo, hi, 1/row.Syscalls.Slowdown())
				}
				line = append(line, v)
			}
			t.add(line...)
		}
		t.write(ew)
	}

	if len(r.Idle) > 0 {
		ew.printf("\nIdle memory per keep-alive connection (RSS growth over the server's RSS before; fresh process each)\n")
		t := &table{}
		var counts []int
		for _, ir := range r.Idle {
			for _, p := range ir.Points {
				if !slices.Contains(counts, p.Conns) {
					counts = append(counts, p.Conns)
				}
			}
		}
		slices.Sort(counts)
		h := []string{"server"}
		for _, n := range counts {
			h = append(h, fmt.Sprintf("%d conns", n))
		}
		t.add(h...)
		for _, ir := range r.Idle {
			line := []string{ir.Server}
			for _, n := range counts {
				v := ""
				for _, p := range ir.Points {
					if p.Conns == n {
						v = byteSize(p.PerConn)
						if p.Partial {
							v += " (partial)"
						}
					}
				}
				line = append(line, v)
			}
			if ir.Err != "" {
				line = append(line, "stopped: "+ir.Err)
			}
			t.add(line...)
		}
		t.write(ew)
	}

	ew.printf("\nRuns: requests/s and server CPU per request in each round (pinned: and its CPUs' busy time per request), then each round's p99 latency, whose median alone hides whether one round or most were slow; errors over all rounds\n")
	for _, row := range r.Rows {
		var rps, cpu, core, p99 []string
		for _, s := range row.Samples {
			rps = append(rps, strconv.FormatFloat(s.RequestsPerSec, 'f', 0, 64))
			p99 = append(p99, s.P99.Round(time.Microsecond).String())
			if s.CPUKnown {
				cpu = append(cpu, usString(s.CPUPerRequest()))
			}
			if s.CoreKnown {
				core = append(core, usString(s.CoreBusyPerRequest()))
			}
		}
		if len(core) > 0 {
			cpu = append(cpu, "| busy")
			cpu = append(cpu, core...)
		}
		what := row.Path
		if slices.Contains(r.MsgServers, row.Server) {
			what = msgEchoWhat(r.MsgPayload)
		}
		if len(p99) > 0 {
			cpu = append(append(cpu, "| p99"), p99...)
		}
		ew.printf("  %s %s c=%d %s: %s | %s | errors %d, non-2xx %d", row.Server, row.Mode, row.Conns, what,
			strings.Join(rps, " "), strings.Join(cpu, " "), row.Errors, row.Non2xx)
		if sc := row.Syscalls; sc != nil && len(sc.Top) > 0 {
			var top []string
			for _, s := range sc.Top {
				top = append(top, fmt.Sprintf("%s %.2f", s.Name, s.PerRequest))
			}
			ew.printf(" | syscalls/request: %s", strings.Join(top, ", "))
		}
		if row.Err != "" {
			ew.printf(" | error: %s", row.Err)
		}
		ew.printf("\n")
	}
	return ew.err
}

// anyRow reports whether some row has what known looks for: a figure
// only some modes or generators measure, whose table is left out when
// no row has it.
func (r *CompareResult) anyRow(known func(*CompareRow) bool) bool {
	return slices.ContainsFunc(r.Rows, func(row CompareRow) bool { return known(&row) })
}

func (r *CompareResult) anySyscalls() *SyscallCount {
	for _, row := range r.Rows {
		if row.Syscalls != nil {
			return row.Syscalls
		}
	}
	return nil
}

// WriteJSON writes r as one indented JSON object.
func (r *CompareResult) WriteJSON(w io.Writer) error {
	e := json.NewEncoder(w)
	e.SetIndent("", "  ")
	return e.Encode(r)
}

// WriteCSV writes one row per run.
func (r *CompareResult) WriteCSV(w io.Writer) error {
	cw := csv.NewWriter(w)
	_ = cw.Write([]string{"server", "mode", "conns", "path", "round", "requests", "requests_per_sec",
		"server_cpu_us_per_req", "p50_us", "p99_us", "errors", "non_2xx", "syscalls_per_req", "server_busy_us_per_req",
		"load_cpu_us_per_req", "load_core_share"})
	us := func(d time.Duration) string { return strconv.FormatFloat(float64(d)/1e3, 'f', 2, 64) }
	for _, row := range r.Rows {
		sys := ""
		if row.Syscalls != nil {
			sys = strconv.FormatFloat(row.Syscalls.PerRequest, 'f', 3, 64)
		}
		for _, s := range row.Samples {
			cpu, busy, load, share := "", "", "", ""
			if s.CPUKnown {
				cpu = us(s.CPUPerRequest())
			}
			if s.CoreKnown {
				busy = us(s.CoreBusyPerRequest())
			}
			if sh := s.LoadShare(); sh > 0 {
				load, share = us(s.LoadCPUPerRequest()), strconv.FormatFloat(sh, 'f', 3, 64)
			}
			_ = cw.Write([]string{row.Server, row.Mode, strconv.Itoa(row.Conns), row.Path, strconv.Itoa(s.Round),
				strconv.FormatUint(s.Requests, 10), strconv.FormatFloat(s.RequestsPerSec, 'f', 1, 64), cpu,
				us(s.P50), us(s.P99), strconv.FormatUint(s.Errors, 10), strconv.FormatUint(s.Non2xx, 10), sys, busy, load, share})
		}
	}
	cw.Flush()
	return cw.Error()
}
