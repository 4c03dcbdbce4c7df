// Command fasthttp is the fasthttp peer, with default server settings.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/quartet-server/quartet/bench/peers"
	"github.com/valyala/fasthttp"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	flag.Parse()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	handler := func(ctx *fasthttp.RequestCtx) {
		q := string(ctx.URI().QueryString())
		switch string(ctx.Path()) {
		case "/hello":
			ctx.SetContentType("text/plain")
			ctx.SetBody(peers.Hello)
		case "/sleep":
			time.Sleep(time.Duration(peers.Query(q, "ms")) * time.Millisecond)
			ctx.SetBody(peers.Hello)
		case "/compute":
			ctx.SetContentType("text/plain")
			ctx.SetBody(peers.ComputeAnswer(peers.Query(q, "n")))
		case "/bytes":
			ctx.SetBody(bytes.Repeat([]byte{'x'}, min(peers.Query(q, "n"), peers.MaxBytes)))
		case "/echo":
			ctx.SetBody(ctx.PostBody())
		default:
			ctx.SetStatusCode(fasthttp.StatusNotFound)
		}
	}
	srv := &fasthttp.Server{Handler: handler, MaxRequestBodySize: peers.MaxBytes}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		_ = srv.Shutdown()
	}()
	fmt.Printf("http://%s\n", ln.Addr())
	if err := srv.Serve(ln); err != nil {
		log.Fatal(err)
	}
}
