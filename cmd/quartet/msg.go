package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"time"

	"github.com/quartet-server/quartet/protocol/msg"
	"github.com/quartet-server/quartet/protocol/msg/msgclient"
	"github.com/quartet-server/quartet/rdma/deliver"
	"github.com/quartet-server/quartet/rdma/rdmatool"
)

// msgOptions are quartet msg's flags.
type msgOptions struct {
	send       string
	out        string
	mode       string
	provider   string
	addr       string
	opTimeout  time.Duration
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
	fl.StringVar(&m.addr, "addr", "", "local IP of this client's RDMA endpoint (default: the address that routes to the server)")
	fl.DurationVar(&m.opTimeout, "op-timeout", deliver.DefaultOpTimeout, "wait this long for an RDMA operation before counting it lost (and asking again)")
	fl.DurationVar(&m.timeout, "timeout", time.Minute, "give up on the reply after this long")
	fl.Var(&m.maxPayload, "max-payload", "largest reply payload accepted")
	fl.BoolVar(&m.quiet, "q", false, "no summary")
}

// runMsg sends a file to a messenger server (quartet serve --msg-addr),
// whose built-in echo dispatcher answers with the same bytes, and writes
// the reply's payload: inline over TCP, or with --rdma by RDMA into a
// registered buffer (server-writes) or read from the server's exposure
// (client-reads), when the server serves RDMA (quartet serve --rdma);
// otherwise the server's reply says why not and the payload comes
// inline, which the summary reports.
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
	if err := checkProvider(m.provider); err != nil {
		return err
	}
	payload, err := readPayload(m.send)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, m.timeout)
	defer cancel()
	cfg := msgclient.Config{Limits: msg.Limits{MaxPayload: int(m.maxPayload)}}
	req := &msgclient.Request{Payload: payload, Deliver: mode}
	if mode != deliver.ModeOff {
		// The endpoint and its buffer outlive the client (deferred
		// first, closed last): the endpoint's Close fails on anything
		// still registered.
		ep, err := m.endpoint(pos[0])
		if err != nil {
			return err
		}
		defer ep.Close()
		// The echo is as long as the file; RDMA needs at least a byte.
		if req.Into, err = ep.NewBuffer(max(len(payload), 1)); err != nil {
			return fmt.Errorf("registering a %d-byte buffer: %w", len(payload), err)
		}
		defer req.Into.Close()
		cfg.Endpoint = ep
	}
	start := time.Now()
	c, err := msgclient.Dial(ctx, pos[0], cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	reply, err := c.Do(ctx, req)
	if err != nil {
		return err
	}
	el := time.Since(start)
	if err := writePayload(m.out, reply.Payload, stdout); err != nil {
		return err
	}
	if !m.quiet {
		how := "TCP"
		switch {
		case reply.ByRDMA():
			how = reply.RDMA.Mode.String()
		case reply.Flags.Has(msg.FlagRDMA):
			how = "TCP (server fell back: " + reply.RDMA.Reason.String() + ")"
		}
		fmt.Fprintf(stderr, "%s: %d bytes sent, %d bytes back by %s in %v (%.1f MiB/s each way), %d attempt(s)\n",
			m.out, len(payload), len(reply.Payload), how, el.Round(time.Microsecond), float64(len(payload))/(1<<20)/el.Seconds(), max(reply.Attempts, 1))
	}
	return nil
}

// endpoint opens this client's RDMA endpoint, on the local address that
// routes to the server unless --addr names one.
func (m *msgOptions) endpoint(server string) (*deliver.Endpoint, error) {
	p, err := rdmatool.NewRegistry().Get(m.provider)
	if err != nil {
		return nil, fmt.Errorf("--provider %s: %w", m.provider, err)
	}
	var ip netip.Addr
	if m.addr != "" {
		if ip, err = netip.ParseAddr(m.addr); err != nil {
			return nil, fmt.Errorf("--addr: %w", err)
		}
	}
	return msgclient.NewEndpoint(p, server, ip, m.opTimeout)
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
