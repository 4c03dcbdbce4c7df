package bench

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Peer names, in report order.
var peerNames = []string{"gnet", "fasthttp", "nethttp"}

// knownPeers are the names --only takes: the peers, nginx, the static
// floor and the messenger's gnet peer.
var knownPeers = append(append([]string(nil), peerNames...), "nginx", sendfilePeer, "gnetmsg")

// sendfilePeer is the floor of a Go static-file server (bench/peers
// /sendfile), which --static holds Quartet against when --only names it.
const sendfilePeer = "sendfile"

// compareMain is `quartet bench compare [flags] [QUARTET-URL]`.
func compareMain(ctx context.Context, args []string, env Env) error {
	fs := flag.NewFlagSet("bench compare", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	var f loadFlags
	f.register(fs)
	connList := fs.String("conns", "100,1000", "connection counts, a comma list; without the flag, 100 alone with --static or --msg")
	path := fs.String("path", "/hello", "request path")
	modes := fs.String("modes", "pinned,both-cores", "modes to run: pinned (server on --server-cpu with GOMAXPROCS=1, load on --load-cpu), both-cores (nothing pinned)")
	serverCPU := fs.Int("server-cpu", 0, "pinned mode: the server's CPU")
	loadCPU := fs.Int("load-cpu", 1, "pinned mode: the load generator's CPU")
	rounds := fs.Int("rounds", 3, "alternating rounds; medians are reported")
	fs.IntVar(rounds, "repeats", 3, "same as --rounds")
	gen := fs.String("gen", GenWrk, "load generator: wrk (wrk -t1, as issue 15 measured) or quartet (the project's, one loop unless -t; takes -m mixes)")
	syscalls := fs.String("syscalls", "auto", "count syscalls per request: perf, strace, auto (perf if it works, else strace), off")
	window := fs.Duration("syscall-window", 2*time.Second, "length of each syscall count")
	windows := fs.Int("syscall-windows", 3, "syscall counts of each server, taken in turn with the other servers' (each on a load of its own, opened and settled first): the table gives all of them together and their spread")
	idle := fs.String("idle", "", "also measure idle memory per connection at these counts, e.g. 1000,10000 (fresh processes)")
	only := fs.String("only", strings.Join(peerNames, ","), "peers to run (gnet, fasthttp, nethttp, nginx, sendfile: the floor of a Go static-file server)")
	peersDir := fs.String("peers", "", "directory of the bench/peers module (default: found from the working directory)")
	peerBin := fs.String("peer-bin", "", "directory of already built peer binaries (skips building)")
	quartetBin := fs.String("quartet", "", "quartet binary to compare (default: this executable)")
	quartetB := fs.String("quartet-b", "", "a second quartet binary, shown as quartet-b and held against quartet too (before/after in one run)")
	quartetExtra := fs.String("quartet-args", "", `extra flags for "quartet serve", e.g. "--readers 2 --writers 2"`)
	msgCmp := fs.Bool("msg", false, "the messenger: its echo of -b bytes (default 13) on quartet serve --msg-addr (quartet-msg) and on the bare gnet messenger peer (gnetmsg), beside GET --path on a second quartet serve started the same way (quartet-http); the project's generator")
	static := fs.Bool("static", false, "static files instead of /hello: 4 KiB and 1 MiB files from quartet serve --root and nginx (2 workers; 1 when pinned)")
	fs.Usage = func() {
		fmt.Fprintln(env.Stderr, `usage: quartet bench compare [flags] [QUARTET-URL]

Runs the same load against Quartet and its peers, one server at a time, on
loopback, in alternating rounds, and prints server CPU per request (with
Quartet's ratios to each peer), requests/s, p99 and syscalls per request.
Without QUARTET-URL, Quartet is started as "quartet serve", once per mode.
  quartet bench compare                                issue 15's table
  quartet bench compare --quartet OLD --quartet-b NEW  before/after in one run
  quartet bench compare --static --idle 1000,10000     static files against nginx; idle memory
  quartet bench compare --msg --modes both-cores       the messenger's echo against gnet's and HTTP's /hello`)
		fs.PrintDefaults()
		fmt.Fprintln(env.Stderr, `
Exit status: 0 when every contender was measured; 1 when one failed to
start or to run (the table is still printed, with its error); 2 for a
usage error, found before anything is built or started.`)
	}
	_ = fs.Set("d", "5s")
	_ = fs.Set("w", "1s")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return helpIsNotAnError(err)
	}
	if len(pos) > 1 {
		fs.Usage()
		return errUsage
	}
	if err := f.check(); err != nil {
		return err
	}
	if *windows < 1 || *window <= 0 {
		return usagef("bench: compare: --syscall-windows %d, --syscall-window %v: want at least one window, of some length", *windows, *window)
	}
	// Everything the command line alone can get wrong is refused here,
	// before peers are built and servers started: minutes of work once
	// ended in a usage mistake, and a comparison of nobody exited 0.
	if *rounds < 1 {
		return usagef("bench: compare: --rounds %d: want at least 1", *rounds)
	}
	switch *gen {
	case GenWrk, GenQuartet:
	default:
		return usagef("bench: compare: --gen %q: want %s or %s", *gen, GenWrk, GenQuartet)
	}
	switch *syscalls {
	case SyscallsPerf, SyscallsStrace, "auto", "off":
	default:
		return usagef("bench: compare: --syscalls %q: want perf, strace, auto or off", *syscalls)
	}
	if strings.Contains(*modes, "pinned") {
		for _, cpu := range []struct {
			flag string
			n    int
		}{{"server-cpu", *serverCPU}, {"load-cpu", *loadCPU}} {
			if !cpuAllowed(cpu.n) {
				return usagef("bench: compare: --%s %d: not a CPU this process may run on", cpu.flag, cpu.n)
			}
		}
	}
	for _, name := range strings.Split(*only, ",") {
		if name = strings.TrimSpace(name); name != "" && !slices.Contains(knownPeers, name) {
			return usagef("bench: compare: --only %q: want some of %s", name, strings.Join(knownPeers, ", "))
		}
	}
	for _, b := range []struct{ flag, path string }{{"quartet", *quartetBin}, {"quartet-b", *quartetB}} {
		if b.path == "" {
			continue
		}
		if st, err := os.Stat(b.path); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			return usagef("bench: compare: --%s %s: not an executable file", b.flag, b.path)
		}
	}
	if *peerBin != "" {
		if st, err := os.Stat(*peerBin); err != nil || !st.IsDir() {
			return usagef("bench: compare: --peer-bin %s: not a directory", *peerBin)
		}
	}
	set := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	if (*static || *msgCmp) && !set["conns"] {
		*connList = "100"
	}
	if *msgCmp {
		switch {
		case *static || *idle != "" || *quartetB != "" || len(pos) > 0:
			return usagef("bench: compare: --msg starts its own servers and takes none of --static, --idle, --quartet-b or a URL")
		case set["gen"] && *gen != GenQuartet:
			return usagef("bench: compare: --msg: wrk speaks HTTP, not the messenger; the project's generator runs it")
		}
		*gen = GenQuartet
		if !set["only"] {
			*only = "gnetmsg"
		}
		if !set["b"] {
			f.body = DefaultMsgPayload
		}
	}
	conns, err := parseInts(*connList)
	if err != nil {
		return err
	}
	if err := RequireFDs(conns); err != nil {
		return err
	}
	var ms []CompareMode
	for _, name := range strings.Split(*modes, ",") {
		switch strings.TrimSpace(name) {
		case "pinned":
			ms = append(ms, Pinned(*serverCPU, *loadCPU))
		case "both-cores":
			ms = append(ms, BothCores)
		default:
			return usagef("bench: compare: mode %q: want pinned or both-cores", name)
		}
	}
	if *gen == GenWrk {
		if _, err := exec.LookPath("wrk"); err != nil {
			return fmt.Errorf("%w; or use --gen quartet", ErrNoWrk)
		}
		if len(f.mix) > 0 || f.mixFile != "" {
			return usagef("bench: compare: wrk runs one path; use --gen quartet for a mix")
		}
	}
	work, err := os.MkdirTemp("", "quartet-compare-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	spec := CompareSpec{Paths: []string{*path}, Conns: conns, Modes: ms, Rounds: *rounds,
		Duration: f.cfg.Duration, Warmup: f.cfg.Warmup, Generator: *gen, SyscallWindow: *window, SyscallWindows: *windows,
		Subjects: []string{"quartet", "quartet-b"}, Work: work, Log: env.Stderr}
	if *idle != "" {
		if spec.Idle, err = parseInts(*idle); err != nil {
			return err
		}
		if err := checkAscending(spec.Idle); err != nil {
			return usagef("bench: compare: --idle %s: %v", *idle, err)
		}
	}
	var extra []string
	if *quartetExtra != "" {
		extra = strings.Fields(*quartetExtra)
	}
	var cs []Contender
	if *static {
		root := work + "/root"
		if err := os.Mkdir(root, 0o755); err != nil {
			return err
		}
		if err := writeStaticFiles(root); err != nil {
			return err
		}
		spec.Paths = nil
		for _, sf := range staticFiles {
			spec.Paths = append(spec.Paths, "/"+sf.Name)
		}
		extra = append(extra, "--root", root)
	}
	bin := *quartetBin
	if bin == "" {
		bin = env.QuartetBinary
	}
	switch {
	case *msgCmp && bin == "":
		return usagef("bench: compare: --msg runs quartet serve: give --quartet BINARY")
	case *msgCmp:
		// Both with the messenger's listener, so they differ only in the
		// protocol they are measured on.
		cs = append(cs, QuartetMsgProcess("quartet-msg", bin, extra))
		spec.Subjects = []string{"quartet-msg"}
	case len(pos) == 1:
		base, p, err := baseURL(pos[0])
		if err != nil {
			return err
		}
		if p != "/" && !*static {
			spec.Paths = []string{p}
		}
		cs = append(cs, URLContender("quartet", base, f.cfg.ServerPID))
	case bin != "":
		cs = append(cs, QuartetProcess("quartet", bin, extra))
	case env.Quartet != nil:
		cs = append(cs, InProcessContender("quartet", env.Quartet))
	default:
		return errors.New("bench: compare: give Quartet's URL (no Quartet server is linked in)")
	}
	if *quartetB != "" {
		cs = append(cs, QuartetProcess("quartet-b", *quartetB, extra))
	}
	var peers []string
	if *static {
		if !set["only"] {
			*only = "nginx"
		}
	}
	for _, name := range strings.Split(*only, ",") {
		if name = strings.TrimSpace(name); name != "" {
			peers = append(peers, name)
		}
	}
	var goPeers []string
	for _, name := range peers {
		if name == "nginx" {
			cs = append(cs, NginxContender(workRoot(work, *static), work, 2))
			continue
		}
		goPeers = append(goPeers, name)
	}
	if len(goPeers) > 0 {
		dir := *peerBin
		if dir == "" {
			src := *peersDir
			if src == "" {
				wd, _ := os.Getwd()
				if src, err = FindPeersDir(wd); err != nil {
					return err
				}
			}
			fmt.Fprintf(env.Stderr, "building peers in %s\n", src)
			if dir, err = BuildPeers(ctx, src); err != nil {
				return err
			}
			defer os.RemoveAll(dir)
		}
		for _, name := range goPeers {
			if name == sendfilePeer {
				cs = append(cs, GoProcess(name, []string{filepath.Join(dir, name), "-addr", "127.0.0.1:0", "-root", workRoot(work, *static)}, nil))
				continue
			}
			cs = append(cs, PeerProcess(name, dir))
		}
	}
	if *msgCmp {
		// With the messenger's listener too, so that it differs from
		// quartet-msg only in the protocol it is measured on.
		cs = append(cs, QuartetProcess("quartet-http", bin, append([]string{"--msg-addr", "127.0.0.1:0"}, extra...)))
	}
	if len(cs) < 2 {
		return errNoSubject
	}

	var syscallNote string
	switch *syscalls {
	case "off":
		syscallNote = "--syscalls off"
	case "auto":
		var why []string
		for _, m := range []string{SyscallsPerf, SyscallsStrace} {
			err := SyscallMethodAvailable(ctx, m)
			if err == nil {
				spec.Syscalls = m
				break
			}
			why = append(why, m+": "+err.Error())
		}
		if spec.Syscalls == "" {
			syscallNote = strings.Join(why, "; ")
		}
	default:
		if err := SyscallMethodAvailable(ctx, *syscalls); err != nil {
			return err
		}
		spec.Syscalls = *syscalls
	}
	spec.Load = f.cfg
	spec.Load.Progress = nil
	if *msgCmp {
		spec.Load.Payload = f.body
	}

	res, err := Compare(ctx, spec, cs)
	if res == nil {
		return err
	}
	res.SyscallNote = syscallNote
	var werr error
	switch {
	case f.jsonOut:
		werr = res.WriteJSON(env.Stdout)
	case f.csvOut:
		werr = res.WriteCSV(env.Stdout)
	default:
		werr = res.WriteText(env.Stdout)
	}
	if err == nil && werr == nil {
		err = res.failed()
	}
	return errors.Join(err, werr)
}

// failed is an error naming the contenders whose rows (or idle
// readings) failed, nil when every one measured: a comparison with a
// server missing is not the comparison asked for, whatever it printed.
// A URL's pinned rows are the exception: the table notes that a server
// the tool did not start cannot be pinned, and its other rows stand,
// but a contender with no row measured at all has failed.
func (r *CompareResult) failed() error {
	var names []string
	first := ""
	add := func(name, err string) {
		if err == "" || slices.Contains(names, name) {
			return
		}
		names = append(names, name)
		if first == "" {
			first = err
		}
	}
	measured := map[string]bool{}
	for _, row := range r.Rows {
		if row.Err != errCannotPin.Error() {
			add(row.Server, row.Err)
		}
		measured[row.Server] = measured[row.Server] || len(row.Samples) > 0
	}
	for _, row := range r.Rows {
		if !measured[row.Server] {
			add(row.Server, cmp.Or(row.Err, "nothing measured"))
		}
	}
	for _, row := range r.Idle {
		add(row.Server, row.Err)
	}
	if len(names) == 0 {
		return nil
	}
	return fmt.Errorf("bench: compare: %s failed (first error: %s)", strings.Join(names, ", "), first)
}

// workRoot is the static files' directory, or work itself (nginx needs a
// root even when it only answers /hello).
func workRoot(work string, static bool) string {
	if static {
		return work + "/root"
	}
	return work
}
