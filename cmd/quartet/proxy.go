package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/quartet-server/quartet/rdma/deliver"
	"github.com/quartet-server/quartet/rdmahttp"
)

// proxyHeaders are the upstream response headers a proxied response keeps.
// Not Accept-Ranges: the proxy fetches whole bodies and ignores Range, so
// it says "none" (RFC 9110, 14.3) whatever the upstream offers.
var proxyHeaders = []string{"Content-Type", "ETag", "Last-Modified", "Cache-Control", rdmahttp.HeaderDigest}

const proxyAbout = `usage: quartet proxy --upstream http://HOST:PORT [--listen ADDR] [--rdma client-reads|server-writes|off] [flags]

Accepts plain HTTP on --listen and answers each GET from an RDMA-capable
Quartet upstream (quartet serve --rdma), the body fetched by RDMA; other
methods are refused (405). The response says how its body came in
X-Quartet-Proxy-Via.

Flags:
`

// runProxy accepts plain HTTP from ordinary clients and fetches each GET
// from an RDMA-capable Quartet upstream (the seed's proxy: TCP in front,
// RDMA behind). Each upstream fetch needs a Client's buffer to itself, so
// the proxy keeps a pool of them; a request waits for a free one.
func runProxy(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var g getOptions
	fl := flag.NewFlagSet("proxy", flag.ContinueOnError)
	fl.SetOutput(io.Discard) // a bad flag is one line, from run
	listen := fl.String("listen", "127.0.0.1:8081", "accept plain HTTP on this address")
	upstream := fl.String("upstream", "", "RDMA-capable Quartet server, http://host:port (required)")
	clients := fl.Int("clients", 4, "RDMA clients (buffers) in the pool: upstream fetches at once")
	// client-reads by default: the upstream's NIC does the work.
	g.bindClient(fl, "client-reads")
	fl.Usage = func() {
		fmt.Fprint(fl.Output(), proxyAbout)
		fl.PrintDefaults()
	}
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fl.SetOutput(stderr)
			fl.Usage()
			return nil
		}
		return usageError{err}
	}
	if fl.NArg() > 0 {
		return unexpectedArgument(fl, args)
	}
	up, err := url.Parse(*upstream)
	if err != nil || up.Scheme != "http" || up.Host == "" {
		return usageError{fmt.Errorf("--upstream %q: want http://host:port", *upstream)}
	}
	mode, err := g.check()
	if err != nil {
		return err
	}
	if *clients < 1 {
		return usageError{errors.New("--clients must be at least 1")}
	}
	pool := make(chan *rdmahttp.Client, *clients)
	defer func() {
		close(pool)
		for c := range pool {
			c.Close()
		}
	}()
	for i := 0; i < *clients; i++ {
		var c *rdmahttp.Client
		if mode == deliver.ModeOff {
			c, err = plainClient()
		} else {
			c, err = g.client(up.Hostname())
		}
		if err != nil {
			return err
		}
		pool <- c
	}
	logger := slog.New(slog.NewTextHandler(stderr, nil))
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: &proxy{up: strings.TrimSuffix(up.String(), "/"), mode: mode, pool: pool, log: logger},
		ReadHeaderTimeout: 10 * time.Second}
	logger.Info("quartet proxy", "addr", ln.Addr().String(), "upstream", up.String(), "rdma", mode.String(), "clients", *clients)
	done := make(chan error, 1)
	go func() { done <- hs.Serve(ln) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = hs.Shutdown(sctx)
	<-done
	return err
}

type proxy struct {
	up   string
	mode deliver.Mode
	pool chan *rdmahttp.Client
	log  *slog.Logger
}

func (p *proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", "GET")
		http.Error(w, "quartet proxy: only GET", http.StatusMethodNotAllowed)
		return
	}
	var c *rdmahttp.Client
	select {
	case c = <-p.pool:
	case <-r.Context().Done():
		return
	}
	defer func() { p.pool <- c }()
	opened := false
	res, err := c.Get(r.Context(), p.up+r.URL.RequestURI(), p.mode, func(res *rdmahttp.Response) (io.Writer, error) {
		opened = true
		for _, h := range proxyHeaders {
			if v := res.Header.Get(h); v != "" {
				w.Header().Set(h, v)
			}
		}
		if res.Length >= 0 {
			w.Header().Set("Content-Length", strconv.FormatInt(res.Length, 10))
		}
		via := res.Mode.String()
		if res.Mode == deliver.ModeOff {
			via = "tcp"
		}
		w.Header().Set("X-Quartet-Proxy-Via", via)
		w.Header().Set("Accept-Ranges", "none")
		w.WriteHeader(res.Status)
		return w, nil
	})
	if err != nil {
		p.log.Warn("upstream fetch", "uri", r.URL.RequestURI(), "err", err)
		if !opened {
			http.Error(w, "quartet proxy: upstream: "+err.Error(), http.StatusBadGateway)
		}
		return
	}
	_ = res
}
