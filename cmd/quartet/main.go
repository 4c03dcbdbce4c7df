// Command quartet runs the Quartet server and its tools.
//
// Each subcommand lives in its own file and registers nothing globally: the
// table below is the whole command surface.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"

	"github.com/quartet-server/quartet/bench"
)

// command is one subcommand: run gets the arguments after its name.
type command struct {
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

func commands() map[string]command {
	return map[string]command{
		"serve":   {"run the server: HTTP/1.1, and the messenger with --msg-addr", runServe},
		"bench":   {"HTTP load generator", runBench},
		"sweep":   {"run an experiment matrix", runSweep},
		"rdma":    {"RDMA devices, rping-compatible ping, perf", runRDMA},
		"get":     {"fetch a URL, the body by RDMA (server-writes, client-reads) or TCP", runGet},
		"proxy":   {"plain HTTP in front of an RDMA-capable Quartet upstream", runProxy},
		"msg":     {"send a file to a messenger server's echo and write the reply", runMsg},
		"version": {"print the version, commit and Go version", runVersion},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// usageError is a command line that cannot be run as given: the command
// exits 2, as Unix commands do for usage errors.
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

// unexpectedArgument is the usage error for the first argument fl left
// over after its flags. The flag package takes a switch's value only
// after "=", so "--reuseport true" leaves "true" over, and that, not an
// argument, is the likely mistake: the error says so.
func unexpectedArgument(fl *flag.FlagSet, args []string) error {
	err := fmt.Errorf("unexpected argument %q", fl.Arg(0))
	i := len(args) - fl.NArg() - 1 // the argument before it
	if i < 0 || !strings.HasPrefix(args[i], "-") || strings.Contains(args[i], "=") {
		return usageError{err}
	}
	name := strings.TrimLeft(args[i], "-")
	if f := fl.Lookup(name); f != nil {
		if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
			err = fmt.Errorf("%w: %s is a switch: alone it means true, and a value goes after \"=\" (%s=false)", err, args[i], args[i])
		}
	}
	return usageError{err}
}

// Exit codes.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cmds := commands()
	if len(args) == 0 {
		usage(stderr, cmds)
		return exitUsage
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		usage(stdout, cmds)
		return exitOK
	case "-version", "--version":
		args[0] = "version"
	}
	name := args[0]
	c, ok := cmds[name]
	if !ok {
		fmt.Fprintf(stderr, "quartet: unknown command %q\n", name)
		usage(stderr, cmds)
		return exitUsage
	}
	if askedForHelp(args[1:]) {
		stderr = stdout // help asked for is output, not a diagnostic
	}
	err := c.run(ctx, args[1:], stdout, stderr)
	if err == nil {
		return exitOK
	}
	var logged loggedError
	if errors.As(err, &logged) {
		return exitError // its line is in the command's own log format
	}
	fmt.Fprintf(stderr, "quartet %s: %s\n", name, unprefixed(err, name))
	if isUsage(err) {
		fmt.Fprintf(stderr, "run 'quartet %s -h' for usage\n", name)
		return exitUsage
	}
	return exitError
}

// loggedError is a command's failure that its logger has already
// reported, as the last line of a log in a format the plain line that run
// prints would break (serve --log-format json): run only exits 1.
type loggedError struct{ error }

func (e loggedError) Unwrap() error { return e.error }

// unprefixed is err's text without the "quartet: " or "NAME: " its package
// put in front, which the command line already says.
func unprefixed(err error, name string) string {
	s := err.Error()
	for _, p := range []string{"quartet: ", name + ": "} {
		s = strings.TrimPrefix(s, p)
	}
	return s
}

// isUsage reports whether err is about the command line itself. The flag
// package's errors carry no type, only stable wording.
func isUsage(err error) bool {
	var ue usageError
	if errors.As(err, &ue) || errors.Is(err, bench.ErrUsage) {
		return true
	}
	for _, p := range []string{"flag provided but not defined", "invalid value ", "invalid boolean ", "flag needs an argument", "bad flag syntax"} {
		if strings.HasPrefix(err.Error(), p) {
			return true
		}
	}
	return false
}

func askedForHelp(args []string) bool {
	for _, a := range args {
		switch a {
		case "-h", "-help", "--help":
			return true
		case "--":
			return false
		}
	}
	return false
}

func usage(w io.Writer, cmds map[string]command) {
	fmt.Fprintln(w, "usage: quartet COMMAND [flags]      (quartet COMMAND -h for a command's flags)")
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-8s %s\n", n, cmds[n].summary)
	}
}
