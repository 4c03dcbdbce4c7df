package runtime

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quartet-server/quartet/processor"
	"github.com/quartet-server/quartet/protocol/http1"
	"github.com/quartet-server/quartet/stages"
)

// computed3 is /compute?n=3's answer, which the peers in bench/peers
// give too (bench/peers TestComputeMatchesQuartet): the same work
// everywhere.
const computed3 = "57227b6d"

func TestBuiltinEndpointsWithNetHTTPClient(t *testing.T) {
	s := startServer(t, Config{})
	base := "http://" + s.Addr().String()
	client := &http.Client{Timeout: 10 * time.Second}
	tests := []struct {
		name, method, path, body string
		status                   int
		want                     string
		wantLen                  int
	}{
		{"hello", "GET", "/hello", "", 200, "Hello, World!", 13},
		{"sleep", "GET", "/sleep?ms=20", "", 200, "OK\n", 3},
		{"compute none", "GET", "/compute?n=0", "", 200, "811c9dc5\n", 9},
		{"compute", "GET", "/compute?n=3", "", 200, computed3 + "\n", -1},
		{"compute bad", "GET", "/compute?n=x", "", 400, "", -1},
		{"compute too long", "GET", "/compute?n=1000001", "", 400, "", -1},
		{"bytes", "GET", "/bytes?n=100000", "", 200, "", 100000},
		{"bytes zero", "GET", "/bytes?n=0", "", 200, "", 0},
		{"bytes bad", "GET", "/bytes?n=x", "", 400, "", -1},
		{"sleep too long", "GET", "/sleep?ms=999999", "", 400, "", -1},
		{"echo", "POST", "/echo", "the body", 200, "the body", 8},
		{"echo wrong method", "GET", "/echo", "", 405, "", -1},
		{"hello wrong method", "DELETE", "/hello", "", 405, "", -1},
		{"site index", "GET", "/", "", 404, "", -1}, // no static handler here
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, base+tt.path, strings.NewReader(tt.body))
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d (body %q)", resp.StatusCode, tt.status, b)
			}
			if tt.want != "" && string(b) != tt.want {
				t.Errorf("body %q, want %q", b, tt.want)
			}
			if tt.wantLen >= 0 && len(b) != tt.wantLen {
				t.Errorf("body length %d, want %d", len(b), tt.wantLen)
			}
			if resp.Header.Get("Date") == "" || resp.Header.Get("Server") != "quartet" {
				t.Errorf("Date %q Server %q", resp.Header.Get("Date"), resp.Header.Get("Server"))
			}
		})
	}
}

func TestKeepAliveReusesTheConnection(t *testing.T) {
	s := startServer(t, Config{})
	client := &http.Client{Timeout: 5 * time.Second}
	reused := 0
	for i := 0; i < 20; i++ {
		trace := &httptrace.ClientTrace{GotConn: func(ci httptrace.GotConnInfo) {
			if ci.Reused {
				reused++
			}
		}}
		req, _ := http.NewRequest("GET", "http://"+s.Addr().String()+"/hello", nil)
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if reused != 19 {
		t.Fatalf("%d of 19 requests reused the connection", reused)
	}
	if st := s.Stats(); st.Accepted != 1 {
		t.Fatalf("server accepted %d connections, want 1", st.Accepted)
	}
}

func TestConnectionManagement(t *testing.T) {
	tests := []struct {
		name       string
		request    string
		wantClose  bool
		wantHeader string // Connection header in the response
	}{
		{"1.1 default keep-alive", "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n", false, ""},
		{"1.1 close", "GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", true, "close"},
		{"1.0 default close", "GET /hello HTTP/1.0\r\n\r\n", true, "close"},
		{"1.0 keep-alive", "GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", false, "keep-alive"},
	}
	s := startServer(t, Config{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dial(t, s)
			br := bufio.NewReader(c)
			resp, body := exchange(t, c, br, tt.request, "GET")
			if resp.StatusCode != 200 || body != "Hello, World!" {
				t.Fatalf("got %d %q", resp.StatusCode, body)
			}
			// net/http's ReadResponse turns "Connection: close" into resp.Close.
			if resp.Close != tt.wantClose {
				t.Errorf("response says close=%v, want %v", resp.Close, tt.wantClose)
			}
			if got := resp.Header.Get("Connection"); tt.wantHeader == "keep-alive" && !strings.EqualFold(got, tt.wantHeader) {
				t.Errorf("Connection: %q, want %q", got, tt.wantHeader)
			}
			if tt.wantClose {
				expectClosed(t, c, br)
				return
			}
			// Still open: a second request works on the same connection.
			resp, body = exchange(t, c, br, strings.Replace(tt.request, "/hello", "/bytes?n=3", 1), "GET")
			if resp.StatusCode != 200 || body != "abc" {
				t.Fatalf("second request: %d %q", resp.StatusCode, body)
			}
		})
	}
}

func TestHEADHasNoBody(t *testing.T) {
	s := startServer(t, Config{})
	c := dial(t, s)
	br := bufio.NewReader(c)
	resp, body := exchange(t, c, br, "HEAD /bytes?n=5000 HTTP/1.1\r\nHost: x\r\n\r\n", "HEAD")
	if resp.StatusCode != 200 || body != "" || resp.ContentLength != 5000 {
		t.Fatalf("HEAD: %d len %d body %q", resp.StatusCode, resp.ContentLength, body)
	}
	// The connection is still in sync: no stray body bytes precede this.
	resp, body = exchange(t, c, br, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n", "GET")
	if body != "Hello, World!" {
		t.Fatalf("after HEAD: %d %q", resp.StatusCode, body)
	}
}

func TestExpect100Continue(t *testing.T) {
	s := startServer(t, Config{})
	c := dial(t, s)
	br := bufio.NewReader(c)
	io.WriteString(c, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
	line, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "HTTP/1.1 100 Continue") {
		t.Fatalf("interim response: %q %v", line, err)
	}
	if l, _ := br.ReadString('\n'); l != "\r\n" {
		t.Fatalf("interim response not terminated: %q", l)
	}
	resp, body := exchange(t, c, br, "hello", "POST")
	if resp.StatusCode != 200 || body != "hello" {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
}

func TestChunkedResponseWhenLengthUnknown(t *testing.T) {
	h := processor.HandlerFunc(func(w *processor.ResponseWriter, r *stages.Request) {
		w.WriteString("first,")
		w.Flush()
		w.WriteString("second")
	})
	s := startServer(t, Config{Handler: h})
	c := dial(t, s)
	br := bufio.NewReader(c)
	resp, body := exchange(t, c, br, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", "GET")
	if len(resp.TransferEncoding) != 1 || resp.TransferEncoding[0] != "chunked" || body != "first,second" {
		t.Fatalf("TE %v body %q", resp.TransferEncoding, body)
	}
	// HTTP/1.0 has no chunked coding: the body is delimited by close.
	c = dial(t, s)
	br = bufio.NewReader(c)
	resp, body = exchange(t, c, br, "GET / HTTP/1.0\r\n\r\n", "GET")
	if len(resp.TransferEncoding) != 0 || body != "first,second" {
		t.Fatalf("1.0: TE %v body %q", resp.TransferEncoding, body)
	}
}

func TestBadRequestsGetTheirStatus(t *testing.T) {
	long := strings.Repeat("a", 20<<10)
	tests := []struct {
		name    string
		request string
		status  int
	}{
		{"garbage", "HELLO\r\n\r\n", 400},
		{"missing host", "GET / HTTP/1.1\r\n\r\n", 400},
		{"uri too long", "GET /" + long + " HTTP/1.1\r\nHost: x\r\n\r\n", 414},
		{"headers too large", "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat(long, 4) + "\r\n\r\n", 431},
		{"too many headers", "GET / HTTP/1.1\r\nHost: x\r\n" + strings.Repeat("X-A: 1\r\n", 200) + "\r\n", 431},
		{"unknown transfer coding", "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501},
		{"version", "GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505},
		{"CL and TE", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"differing CLs", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400},
		{"bad CL", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: -3\r\n\r\n", 400},
		{"bare LF", "GET / HTTP/1.1\nHost: x\n\n", 400},
		{"obs-fold", "GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  folded\r\n\r\n", 400},
		{"space before colon", "GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400},
		{"body too large declared", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n", 413},
		{"body too large chunked", "POST /readall HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" +
			strings.Repeat(fmt.Sprintf("%x\r\n%s\r\n", 100000, strings.Repeat("z", 100000)), 12) + "0\r\n\r\n", 413},
		{"expectation", "GET / HTTP/1.1\r\nHost: x\r\nExpect: teapot\r\n\r\n", 417},
	}
	readAll := processor.HandlerFunc(func(w *processor.ResponseWriter, r *stages.Request) {
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			w.WriteHeader(http1.StatusOf(err))
			return
		}
		w.WriteString("read it all")
	})
	s := startServer(t, Config{MaxBodyBytes: 1 << 20, Handler: Builtin(readAll)})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dial(t, s)
			br := bufio.NewReader(c)
			go io.WriteString(c, tt.request) // may block on a large body the server refuses
			resp, _ := exchange(t, c, br, "", "GET")
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.status)
			}
			if tt.status >= 400 {
				if !resp.Close {
					t.Errorf("error response without Connection: close")
				}
				expectClosed(t, c, br)
			}
		})
	}
}

func TestPipelinedRequestsKeepTheirOrder(t *testing.T) {
	s := startServer(t, Config{Processors: 8})
	c := dial(t, s)
	br := bufio.NewReader(c)
	var raw strings.Builder
	var want []string
	for i := 0; i < 30; i++ {
		// Slow and fast requests interleaved: a later, faster request must
		// not overtake an earlier one.
		if i%3 == 0 {
			fmt.Fprintf(&raw, "GET /sleep?ms=%d HTTP/1.1\r\nHost: x\r\n\r\n", 30-i)
			want = append(want, "OK\n")
		} else {
			fmt.Fprintf(&raw, "GET /bytes?n=%d HTTP/1.1\r\nHost: x\r\n\r\n", i)
			want = append(want, strings.Repeat("x", i))
		}
	}
	io.WriteString(c, raw.String())
	for i, w := range want {
		resp, body := exchange(t, c, br, "", "GET")
		if resp.StatusCode != 200 || len(body) != len(w) || (w == "OK\n" && body != w) {
			t.Fatalf("response %d: %d %q, want %q", i, resp.StatusCode, body, w)
		}
	}
}

func TestRequestBodiesStream(t *testing.T) {
	s := startServer(t, Config{MaxBodyBytes: 64 << 20})
	payload := bytes.Repeat([]byte("0123456789abcdef"), (10<<20)/16+7)
	sum := sha256.Sum256(payload)
	client := &http.Client{Timeout: 20 * time.Second}
	for _, chunked := range []bool{false, true} {
		t.Run(fmt.Sprintf("chunked=%v", chunked), func(t *testing.T) {
			var body io.Reader = bytes.NewReader(payload)
			if chunked {
				body = struct{ io.Reader }{body} // hides the length: net/http sends chunked
			}
			req, _ := http.NewRequest("POST", "http://"+s.Addr().String()+"/echo", body)
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("%d %v", resp.StatusCode, err)
			}
			if sha256.Sum256(got) != sum {
				t.Fatalf("echoed %d bytes differ from the %d sent", len(got), len(payload))
			}
		})
	}
}

func TestHandlerPanicGives500AndTheWorkerSurvives(t *testing.T) {
	h := processor.HandlerFunc(func(w *processor.ResponseWriter, r *stages.Request) {
		if string(r.Path) == "/panic" {
			panic("handler bug")
		}
		w.WriteString("alive")
	})
	s := startServer(t, Config{Handler: h, Processors: 1})
	client := &http.Client{Timeout: 5 * time.Second}
	for i := 0; i < 3; i++ {
		resp, err := client.Get("http://" + s.Addr().String() + "/panic")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 500 {
			t.Fatalf("panic gave %d, want 500", resp.StatusCode)
		}
		resp, err = client.Get("http://" + s.Addr().String() + "/ok")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "alive" {
			t.Fatalf("after a panic the only worker answered %q", b)
		}
	}
	if got := s.Stats().Processor.Failed; got != 3 {
		t.Errorf("processor Failed = %d after 3 panics", got)
	}
}

func TestNetHTTPHandlerRunsUnchanged(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/greet/{name}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Seen-Method", r.Method)
		fmt.Fprintf(w, "hi %s from %s", r.PathValue("name"), r.Header.Get("X-Client"))
	})
	mux.HandleFunc("/hijack", func(w http.ResponseWriter, r *http.Request) {
		_, _, err := w.(http.Hijacker).Hijack()
		http.Error(w, err.Error(), http.StatusNotImplemented)
	})
	s := startServer(t, Config{Handler: processor.Adapt(mux)})
	client := &http.Client{Timeout: 5 * time.Second}
	req, _ := http.NewRequest("GET", "http://"+s.Addr().String()+"/greet/ana", nil)
	req.Header.Set("X-Client", "test")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "hi ana from test" || resp.Header.Get("X-Seen-Method") != "GET" {
		t.Fatalf("got %q %v", b, resp.Header)
	}
	resp, err = client.Get("http://" + s.Addr().String() + "/hijack")
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 501 || !strings.Contains(string(b), "hijack") {
		t.Fatalf("hijack: %d %q", resp.StatusCode, b)
	}
}

func TestConcurrentClients(t *testing.T) {
	s := startServer(t, Config{Readers: 2, Writers: 2, Processors: 4})
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := 0; g < 32; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				n := (g*50 + i) % 5000
				resp, err := client.Get(fmt.Sprintf("http://%s/bytes?n=%d", s.Addr(), n))
				if err != nil {
					errs <- err
					return
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if len(b) != n {
					errs <- fmt.Errorf("asked %d bytes, got %d", n, len(b))
					return
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// The writer records a response's service time after its last byte,
	// which the client may have read already.
	var st Stats
	if !eventually(5*time.Second, func() bool {
		st = s.Stats()
		return st.Processor.Dequeued >= 1600 && st.Writer.Count >= 1600 && st.Processor.P50 > 0
	}) {
		t.Fatalf("stats do not reflect 1600 requests: processor %+v, writer %+v", st.Processor, st.Writer)
	}
}

// A net/http handler finds the server's body limit the way it finds
// http.MaxBytesReader's: errors.As with *http.MaxBytesError, Limit set,
// and the error is still stages.ErrBodyTooLarge (which the server answers
// with 413 when the handler has written nothing).
func TestNetHTTPHandlerSeesMaxBytesError(t *testing.T) {
	const limit = 1000
	s := startServer(t, Config{MaxBodyBytes: limit, Handler: processor.Adapt(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := io.ReadAll(r.Body)
		var mbe *http.MaxBytesError
		if !errors.As(err, &mbe) || !errors.Is(err, stages.ErrBodyTooLarge) {
			http.Error(w, fmt.Sprintf("read: %v", err), http.StatusInternalServerError)
			return
		}
		http.Error(w, fmt.Sprintf("over %d bytes", mbe.Limit), http.StatusRequestEntityTooLarge)
	}))})
	// Chunked: a counted body over the limit is refused before dispatch.
	resp, err := http.Post("http://"+s.Addr().String()+"/", "text/plain", io.MultiReader(strings.NewReader(strings.Repeat("x", 5000))))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 413 || strings.TrimSpace(string(body)) != "over 1000 bytes" {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
}

// "OPTIONS *" asks about the server: net/http's server answers 200 before
// its handler, whose ServeMux would answer 400; Adapt does the same.
func TestOptionsAsteriskThroughAdapt(t *testing.T) {
	called := false
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { called = true })
	s := startServer(t, Config{Handler: processor.Adapt(mux)})
	c := dial(t, s)
	resp, body := exchange(t, c, bufio.NewReader(c), "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", "OPTIONS")
	if resp.StatusCode != 200 || body != "" || resp.ContentLength != 0 || resp.Close || called {
		t.Fatalf("%d %q length %d close %v handler called %v", resp.StatusCode, body, resp.ContentLength, resp.Close, called)
	}
}

// A net/http handler's trailers reach Go's client over a real socket, on
// a connection that carries the next request.
func TestTrailersThroughAdapt(t *testing.T) {
	s := startServer(t, Config{Handler: processor.Adapt(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Checksum")
		io.WriteString(w, "payload")
		w.Header().Set("X-Checksum", "c0ffee")
	}))})
	client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1}}
	defer client.CloseIdleConnections()
	for i := range 2 {
		resp, err := client.Get("http://" + s.Addr().String() + "/")
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || string(body) != "payload" || resp.Trailer.Get("X-Checksum") != "c0ffee" {
			t.Fatalf("request %d: %q %v, trailer %v", i, body, err, resp.Trailer)
		}
	}
}
