package runtime_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/quartet-server/quartet/metrics"
	"github.com/quartet-server/quartet/processor"
	"github.com/quartet-server/quartet/runtime"
	"github.com/quartet-server/quartet/stages"
)

// get fetches url and returns its body (the examples' client).
func get(url string) string {
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get(url)
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// An unchanged net/http handler runs on the processor pool through
// processor.Adapt. In a program, ctx comes from signal.NotifyContext, and
// returning Serve's error is the whole main (examples/embed).
func Example_netHTTP() {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /hello/{name}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "Hello, %s!\n", r.PathValue("name"))
	})
	srv, err := runtime.New(runtime.Config{
		Addr:    "127.0.0.1:0", // port 0: any free port; srv.Addr() says which
		Handler: processor.Adapt(mux),
	})
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()

	fmt.Print(get("http://" + srv.Addr().String() + "/hello/quartet"))

	stop() // as Ctrl-C would: Serve finishes what is in flight and returns
	if err := <-served; err != nil {
		log.Fatal(err)
	}
	// Output: Hello, quartet!
}

// A native handler reads the request in place (package stages) and writes
// through the worker's ResponseWriter: no allocation per request. The
// request's byte slices die with the request; copy what you keep.
func Example_native() {
	hello := processor.HandlerFunc(func(w *processor.ResponseWriter, r *stages.Request) {
		if !r.IsMethod("GET") && !r.IsMethod("HEAD") {
			w.Header().Set("Allow", "GET, HEAD")
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		var buf [64]byte
		name, ok := r.AppendQueryValue(buf[:0], "name") // decoded, into buf
		if !ok {
			name = append(name, "world"...)
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteString("Hello, ")
		w.Write(name)
		w.WriteString("!\n")
	})
	srv, err := runtime.New(runtime.Config{Addr: "127.0.0.1:0", Handler: hello})
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()

	fmt.Print(get("http://" + srv.Addr().String() + "/?name=Brian+Pane"))

	stop()
	<-served
	// Output: Hello, Brian Pane!
}

// Metrics and health on their own listener (net/http's), so that operator
// traffic stays out of the pipeline it measures.
func Example_metrics() {
	mx := metrics.New()
	mx.RegisterBuildInfo(metrics.ReadBuildInfo(metrics.BuildInfo{}))
	srv, err := runtime.New(runtime.Config{
		Addr:    "127.0.0.1:0",
		Handler: runtime.Builtin(nil), // the load-test endpoints: /hello, /sleep, /compute, /bytes, /echo
		Modules: []runtime.Module{mx.Module()},
	})
	if err != nil {
		log.Fatal(err)
	}
	mx.Attach(srv)
	admin := http.NewServeMux()
	admin.Handle("/metrics", mx.Handler())
	admin.Handle("/healthz", metrics.Live())
	admin.Handle("/readyz", metrics.Ready(srv))
	adminLn, err := net.Listen("tcp", "127.0.0.1:0") // ":9090", say
	if err != nil {
		log.Fatal(err)
	}
	go http.Serve(adminLn, admin)
	defer adminLn.Close()

	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()
	fmt.Println(get("http://" + srv.Addr().String() + "/hello"))

	fmt.Print(get("http://" + adminLn.Addr().String() + "/readyz"))
	scrape := get("http://" + adminLn.Addr().String() + "/metrics")
	fmt.Println(strings.Contains(scrape, `quartet_stage_loops{stage="processor"}`))

	stop()
	<-served
	// Output:
	// Hello, World!
	// ready
	// true
}

// Shutdown is graceful, and so is cancelling Serve's context: the request
// in flight is answered. Passing the same (cancelled) context to both is
// safe: only a deadline on Shutdown's context shortens the grace.
func ExampleServer_Shutdown() {
	started := make(chan struct{})
	slow := processor.HandlerFunc(func(w *processor.ResponseWriter, r *stages.Request) {
		close(started)
		time.Sleep(300 * time.Millisecond) // a slow database, say
		w.WriteString("finished\n")
	})
	srv, err := runtime.New(runtime.Config{Addr: "127.0.0.1:0", Handler: slow, ShutdownTimeout: 10 * time.Second})
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background()) // signal.NotifyContext in a program
	go srv.Serve(ctx)

	reply := make(chan string)
	go func() { reply <- get("http://" + srv.Addr().String() + "/") }()
	<-started

	stop() // Ctrl-C
	if err := srv.Shutdown(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Print(<-reply)
	// Output: finished
}

// An access log for a busy server: the writer loops only gather the lines,
// and the logger's goroutine writes them to the file in batches. Close it
// once Serve has returned, so that the last lines reach the file.
func ExampleAccessLogger() {
	f, err := os.CreateTemp("", "access-*.log") // os.OpenFile(path, O_WRONLY|O_APPEND|O_CREATE) in a program
	if err != nil {
		log.Fatal(err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	alog, err := runtime.NewAccessLogger(f, runtime.Combined, nil)
	if err != nil {
		log.Fatal(err)
	}
	srv, err := runtime.New(runtime.Config{Addr: "127.0.0.1:0", Handler: runtime.Builtin(nil), Log: alog.Log})
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()
	fmt.Println(get("http://" + srv.Addr().String() + "/hello"))

	stop()
	<-served
	if err := alog.Close(); err != nil {
		log.Fatal(err) // the disk refused the last lines
	}
	lines, _ := os.ReadFile(f.Name())
	fmt.Println(strings.Contains(string(lines), `"GET /hello HTTP/1.1" 200 13`))
	// Output:
	// Hello, World!
	// true
}
