// Command embed is the smallest program that embeds Quartet: an unchanged
// net/http handler, served until Ctrl-C, which finishes the requests in
// flight before it exits. The README shows this file.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	"github.com/quartet-server/quartet/processor"
	"github.com/quartet-server/quartet/runtime"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "listen address")
	flag.Parse()

	mux := http.NewServeMux()
	mux.HandleFunc("GET /hello/{name}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "Hello, %s!\n", r.PathValue("name"))
	})
	srv, err := runtime.New(runtime.Config{
		Addr:    *addr,
		Handler: processor.Adapt(mux), // a net/http handler, unchanged
	})
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("serving on http://%s", srv.Addr())

	// Ctrl-C or SIGTERM ends ctx; Serve then lets the requests in flight
	// finish (within Config.ShutdownTimeout, 30s) and returns. A second
	// Ctrl-C stops at once: stop gives the signals their default back.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	context.AfterFunc(ctx, stop)
	if err := srv.Serve(ctx); err != nil {
		log.Fatal(err)
	}
}
