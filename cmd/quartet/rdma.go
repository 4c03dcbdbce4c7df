package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/quartet-server/quartet/rdma/rdmatool"
)

// rdmaUsage lists the rdma subcommands; rdmatool documents each.
const rdmaUsage = `usage: quartet rdma [--provider verbs|soft|auto] COMMAND [flags]
  devices   list devices, transport, ports and limits
  ping      rping-compatible ping: -s|-c [-a ADDR] [-p PORT] [-C COUNT] [-S SIZE] [-v]
  perf      RDMA write/read/send bandwidth and latency: -s|-c [-a ADDR] [-t write|read|send] [-m bw|lat]
The provider defaults to auto: verbs when this binary has it (built with
-tags verbs) and a device exists, else the pure-Go soft iWARP provider.`

// runRDMA dispatches quartet rdma devices|ping|perf. --provider may come
// before or after the subcommand, so rping-style command lines can be
// reused with it appended.
func runRDMA(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	provider, rest, err := takeProvider(args)
	if err != nil {
		return err
	}
	if len(rest) == 0 || rest[0] == "-h" || rest[0] == "-help" || rest[0] == "--help" || rest[0] == "help" {
		fmt.Fprintln(stderr, rdmaUsage)
		if len(rest) == 0 {
			return usageError{errors.New("missing command")}
		}
		return nil
	}
	run := map[string]func(context.Context, string, []string, io.Writer, io.Writer) error{
		"devices": rdmatool.Devices,
		"ping":    rdmatool.Ping,
		"perf":    rdmatool.Perf,
	}[rest[0]]
	if run == nil {
		fmt.Fprintln(stderr, rdmaUsage)
		return usageError{fmt.Errorf("unknown command %q", rest[0])}
	}
	// rdmatool's commands print their usage for -h and return the flag
	// package's ErrHelp: help asked for is a success.
	if err := run(ctx, provider, rest[1:], stdout, stderr); !errors.Is(err, flag.ErrHelp) {
		return err
	}
	return nil
}

// takeProvider removes --provider NAME (or --provider=NAME, -provider)
// from args; the default is auto.
func takeProvider(args []string) (string, []string, error) {
	provider := "auto"
	rest := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		a := args[i]
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") || name != "provider" {
			rest = append(rest, a)
			continue
		}
		if !hasVal {
			if i+1 >= len(args) {
				return "", nil, usageError{errors.New("--provider needs a name (verbs, soft or auto)")}
			}
			i++
			val = args[i]
		}
		provider = val
	}
	if err := checkProvider(provider); err != nil {
		return "", nil, err
	}
	return provider, rest, nil
}

// checkProvider refuses, as a usage error, a provider name no build
// knows. Whether a known one works here (verbs needs -tags verbs and a
// device) is found out when it is opened.
func checkProvider(name string) error {
	switch name {
	case "verbs", "soft", "auto":
		return nil
	}
	return usageError{fmt.Errorf("--provider %q: want verbs, soft or auto", name)}
}
