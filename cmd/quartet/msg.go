package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/quartet-server/quartet/protocol/msg"
	"github.com/quartet-server/quartet/protocol/msg/msgclient"
	"github.com/quartet-server/quartet/rdma/deliver"
)

// msgOptions are quartet msg's flags.
type msgOptions struct {
	send       string
	out        string
	mode       string
	provider   string
	timeout    time.Duration
	maxPayload sizeInt
	quiet      bool
}

func (m *msgOptions) bind(fl *flag.FlagSet) {
	m.maxPayload = msg.DefaultMaxPayload
	fl.StringVar(&m.send, "send", "", "send this file's bytes as the request's payload (- for stdin)")
	fl.StringVar(&m.out, "O", "-", "write the reply's payload to FILE (- for stdout)")
	fl.StringVar(&m.mode, "rdma", "off", "reply payload delivery: off (TCP), server-writes or client-reads")
	fl.StringVar(&m.provider, "provider", "auto", "RDMA provider for --rdma: verbs, soft or auto")
	fl.DurationVar(&m.timeout, "timeout", time.Minute, "give up on the reply after this long")
	fl.Var(&m.maxPayload, "max-payload", "largest reply payload accepted")
	fl.BoolVar(&m.quiet, "q", false, "no summary")
}

// errMsgRDMA is returned for --rdma server-writes and client-reads: the
// client (msgclient) can ask for them, but the stages' writer loops do
// not carry the messenger's RDMA binding (msgrdma) yet, so the server
// would answer every such request with its payload inline. Refusing says
// so, where a silent fallback would measure TCP and call it RDMA.
var errMsgRDMA = errors.New("quartet msg: --rdma: the server's messenger does not deliver by RDMA yet " +
	"(protocol/msg/msgrdma is not wired to the writer loops); use --rdma off")

// runMsg sends a file to a messenger server (quartet serve --msg-addr),
// whose built-in echo dispatcher answers with the same bytes, and writes
// the reply's payload.
func runMsg(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var m msgOptions
	fl := flag.NewFlagSet("msg", flag.ContinueOnError)
	fl.SetOutput(stderr)
	m.bind(fl)
	fl.Usage = func() {
		fmt.Fprintln(stderr, "usage: quartet msg HOST:PORT --send FILE [-O OUT] [--rdma off|server-writes|client-reads] [--provider verbs|soft|auto]")
		fl.PrintDefaults()
	}
	pos, err := parseInterleaved(fl, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return usageError{err}
	}
	if len(pos) != 1 {
		fl.Usage()
		return usageError{errors.New("want exactly one address, HOST:PORT")}
	}
	if m.send == "" {
		fl.Usage()
		return usageError{errors.New("--send FILE is required")}
	}
	mode, err := deliver.ParseMode(m.mode)
	if err != nil {
		return usageError{err}
	}
	switch m.provider {
	case "verbs", "soft", "auto":
	default:
		return usageError{fmt.Errorf("--provider %q: want verbs, soft or auto", m.provider)}
	}
	if mode != deliver.ModeOff {
		return errMsgRDMA
	}
	payload, err := readPayload(m.send)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, m.timeout)
	defer cancel()
	start := time.Now()
	c, err := msgclient.Dial(ctx, pos[0], msgclient.Config{Limits: msg.Limits{MaxPayload: int(m.maxPayload)}})
	if err != nil {
		return err
	}
	defer c.Close()
	reply, err := c.Call(ctx, payload)
	if err != nil {
		return err
	}
	el := time.Since(start)
	if err := writePayload(m.out, reply, stdout); err != nil {
		return err
	}
	if !m.quiet {
		fmt.Fprintf(stderr, "%s: %d bytes sent, %d bytes back by TCP in %v (%.1f MiB/s each way)\n",
			m.out, len(payload), len(reply), el.Round(time.Microsecond), float64(len(payload))/(1<<20)/el.Seconds())
	}
	return nil
}

func readPayload(name string) ([]byte, error) {
	if name == "-" {
		return io.ReadAll(os.Stdin)
	}
	return os.ReadFile(name)
}

func writePayload(name string, b []byte, stdout io.Writer) error {
	if name == "-" {
		_, err := stdout.Write(b)
		return err
	}
	return os.WriteFile(name, b, 0o644)
}
