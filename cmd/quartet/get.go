package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"net/url"
	"os"
	"path"
	"time"

	"github.com/quartet-server/quartet/rdma/deliver"
	"github.com/quartet-server/quartet/rdma/rdmatool"
	"github.com/quartet-server/quartet/rdmahttp"
)

// getOptions are quartet get's flags.
type getOptions struct {
	out      string
	mode     string
	provider string
	addr     string
	buffer   int
	timeout  time.Duration
	retries  int
	quiet    bool
	repeat   int
}

func (g *getOptions) bind(fl *flag.FlagSet) {
	fl.StringVar(&g.out, "O", "", "write the body to FILE (- for stdout; default: the URL's last path element)")
	g.bindClient(fl, "server-writes")
	fl.BoolVar(&g.quiet, "q", false, "no progress bar and no summary")
	fl.IntVar(&g.repeat, "n", 1, "fetch the URL this many times with one client (a measurement: the file is rewritten each time)")
}

// bindClient binds the flags of the RDMA client alone, which quartet
// proxy shares with get; mode is the command's own default delivery.
func (g *getOptions) bindClient(fl *flag.FlagSet, mode string) {
	fl.StringVar(&g.mode, "rdma", mode, "body delivery: server-writes, client-reads or off")
	fl.StringVar(&g.provider, "provider", "auto", "RDMA provider: verbs, soft or auto")
	fl.StringVar(&g.addr, "addr", "", "local IP of this client's RDMA endpoint (default: the address that routes to the server)")
	fl.IntVar(&g.buffer, "buffer", rdmahttp.DefaultBufferSize, "registered buffer in bytes: the largest body taken by RDMA")
	fl.DurationVar(&g.timeout, "op-timeout", rdmahttp.DefaultOpTimeout, "wait this long for an RDMA operation before counting it lost")
	fl.IntVar(&g.retries, "retries", rdmahttp.DefaultRetries, "ask again this many times for a lost operation (-1: never)")
}

// check reports what in the flags cannot be run, as a usage error (exit
// 2), before anything is opened: the delivery mode and the provider's
// name. Whether the named provider works here is found out later.
func (g *getOptions) check() (deliver.Mode, error) {
	mode, err := deliver.ParseMode(g.mode)
	if err != nil {
		return 0, usageError{err}
	}
	return mode, checkProvider(g.provider)
}

// parseInterleaved parses flags that may come before or after the
// positional arguments (quartet get URL -O file), which flag alone stops at.
func parseInterleaved(fl *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fl.Parse(args); err != nil {
			return nil, err
		}
		if fl.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fl.Arg(0))
		args = fl.Args()[1:]
	}
}

// runGet is a wget for RDMA-capable Quartet servers (the seed's client).
func runGet(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var g getOptions
	fl := flag.NewFlagSet("get", flag.ContinueOnError)
	fl.SetOutput(stderr)
	g.bind(fl)
	fl.Usage = func() {
		fmt.Fprintln(stderr, "usage: quartet get URL [-O FILE] [--rdma server-writes|client-reads|off] [--provider verbs|soft|auto]")
		fl.PrintDefaults()
	}
	pos, err := parseInterleaved(fl, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if len(pos) != 1 {
		fl.Usage()
		return usageError{errors.New("want exactly one URL")}
	}
	u, err := url.Parse(pos[0])
	if err != nil || u.Scheme != "http" || u.Host == "" {
		return usageError{fmt.Errorf("URL %q: want http://host[:port]/path", pos[0])}
	}
	mode, err := g.check()
	if err != nil {
		return err
	}
	var c *rdmahttp.Client
	if mode != deliver.ModeOff {
		if c, err = g.client(u.Hostname()); err != nil {
			return err
		}
		defer c.Close()
	} else if c, err = plainClient(); err != nil {
		return err
	}
	out := g.out
	if out == "" {
		out = path.Base(u.Path)
		if out == "/" || out == "." || out == "" {
			out = "index.html"
		}
	}
	var f *os.File
	var pw *progress
	start := time.Now()
	var r *rdmahttp.Response
	var total int64
	for i := 0; i < max(g.repeat, 1) && err == nil; i++ {
		if f != nil {
			f.Close()
			f = nil
		}
		r, err = c.Get(ctx, u.String(), mode, func(r *rdmahttp.Response) (io.Writer, error) {
			if r.Status != 200 {
				return nil, fmt.Errorf("%s: HTTP %d", u, r.Status)
			}
			w := io.Writer(stdout)
			if out != "-" {
				if f, err = os.Create(out); err != nil {
					return nil, err
				}
				w = f
			}
			if !g.quiet && r.Mode == deliver.ModeOff && r.Length > 1<<20 && isTerminal(stderr) {
				pw = &progress{w: w, total: r.Length, out: stderr, start: time.Now()}
				return pw, nil
			}
			return w, nil
		})
		if err == nil {
			total += r.Length
		}
	}
	if f != nil {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if pw != nil {
		pw.finish()
	}
	if err != nil {
		return err
	}
	if !g.quiet {
		el := time.Since(start)
		how := r.Mode.String()
		if r.Mode == deliver.ModeOff {
			how = "TCP"
			if r.Fallback != "" {
				how += " (server fell back: " + r.Fallback + ")"
			}
		}
		check := "no digest"
		if r.Verified {
			check = "sha256 verified"
		}
		fmt.Fprintf(stderr, "%s: %d bytes by %s in %v (%.1f MiB/s), %s, %d attempt(s)\n",
			out, total, how, el.Round(time.Microsecond), float64(total)/(1<<20)/el.Seconds(), check, r.Attempts)
	}
	return nil
}

// client opens an RDMA client whose endpoint the server can reach.
func (g *getOptions) client(host string) (*rdmahttp.Client, error) {
	p, err := rdmatool.NewRegistry().Get(g.provider)
	if err != nil {
		return nil, fmt.Errorf("--provider %s: %w", g.provider, err)
	}
	var ip netip.Addr
	if g.addr != "" {
		if ip, err = netip.ParseAddr(g.addr); err != nil {
			return nil, fmt.Errorf("--addr: %w", err)
		}
	} else if ip, err = rdmahttp.LocalAddrFor(host); err != nil {
		return nil, fmt.Errorf("finding the local address towards %s (use --addr): %w", host, err)
	}
	return rdmahttp.NewClient(rdmahttp.ClientConfig{
		Provider: p, Addr: netip.AddrPortFrom(ip, 0).String(),
		BufferSize: g.buffer, OpTimeout: g.timeout, Retries: g.retries,
	})
}

// plainClient is a Client for --rdma off: the soft provider's device
// costs nothing until used and gives Get the same code path.
func plainClient() (*rdmahttp.Client, error) {
	p, err := rdmatool.NewRegistry().Get("soft")
	if err != nil {
		return nil, err
	}
	return rdmahttp.NewClient(rdmahttp.ClientConfig{Provider: p, BufferSize: 4096})
}

// progress draws a bar on a terminal for a body streamed over TCP (an
// RDMA body arrives whole).
type progress struct {
	w     io.Writer
	out   io.Writer
	total int64
	done  int64
	last  time.Time
	start time.Time
}

func (p *progress) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	p.done += int64(n)
	if now := time.Now(); now.Sub(p.last) >= 100*time.Millisecond {
		p.last = now
		p.draw()
	}
	return n, err
}

func (p *progress) draw() {
	const width = 40
	frac := float64(p.done) / float64(p.total)
	fill := min(int(frac*width), width)
	bar := make([]byte, width)
	for i := range bar {
		bar[i] = ' '
		if i < fill {
			bar[i] = '='
		}
	}
	rate := float64(p.done) / (1 << 20) / max(time.Since(p.start).Seconds(), 1e-9)
	fmt.Fprintf(p.out, "\r[%s] %3.0f%% %d/%d bytes %.1f MiB/s", bar, frac*100, p.done, p.total, rate)
}

func (p *progress) finish() {
	p.draw()
	fmt.Fprintln(p.out)
}
