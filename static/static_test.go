package static_test

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"golang.org/x/sys/unix"

	"github.com/quartet-server/quartet/internal/fdtest"
	"github.com/quartet-server/quartet/processor"
	"github.com/quartet-server/quartet/runtime"
	"github.com/quartet-server/quartet/stages"
	"github.com/quartet-server/quartet/static"
)

const waitLimit = 10 * time.Second

// serve runs a Quartet server with h on 127.0.0.1 until the test ends and
// returns its address.
func serve(t *testing.T, h processor.Handler, tweak ...func(*runtime.Config)) string {
	t.Helper()
	addr, _ := serveStop(t, h, tweak...)
	return addr
}

// serveStop is serve that also returns a function that shuts the server
// down gracefully (the test's end does it otherwise).
func serveStop(t *testing.T, h processor.Handler, tweak ...func(*runtime.Config)) (string, func()) {
	t.Helper()
	cfg := runtime.Config{
		Addr:    "127.0.0.1:0",
		Handler: h,
		Logger:  slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	for _, f := range tweak {
		f(&cfg)
	}
	srv, err := runtime.New(cfg)
	if err != nil {
		t.Fatalf("runtime.New: %v", err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(context.Background()) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
			defer cancel()
			if err := srv.Shutdown(ctx); err != nil {
				t.Errorf("Shutdown: %v", err)
			}
			select {
			case err := <-served:
				if err != nil {
					t.Errorf("Serve: %v", err)
				}
			case <-time.After(waitLimit):
				t.Error("Serve did not return after Shutdown")
			}
		})
	}
	t.Cleanup(stop)
	return srv.Addr().String(), stop
}

// response is one parsed response and the raw bytes it came in.
type response struct {
	status int
	header http.Header
	body   []byte
	raw    []byte
}

// do sends one raw request (the target exactly as given: net/http's client
// would clean it) on a new connection and reads the whole response.
func do(t *testing.T, addr, method, target string) response {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(waitLimit))
	if _, err := io.WriteString(c, method+" "+target+" HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("%s %s: reading the response: %v", method, target, err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(raw)), &http.Request{Method: method})
	if err != nil {
		t.Fatalf("%s %s: malformed response %q: %v", method, target, raw, err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: body: %v", method, target, err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: body, raw: raw}
}

// tree builds a temp dir:
//
//	secret                 outside the root
//	root/hello.txt
//	root/index.html
//	root/sub/index.html
//	root/nodir/            no index
//	root/sp ace.txt
//	root/data.qqq          unknown extension
//	root/big.dat           several MiB, sent in many sendfile calls
//	root/mid.dat           40,000 bytes: by sendfile, not from memory
//	root/link   -> ../secret      (out of the root)
//	root/linkdir -> ..            (out of the root)
//	root/inlink -> hello.txt      (inside: allowed)
func tree(t *testing.T) (root string, secret []byte, big []byte) {
	t.Helper()
	dir := t.TempDir()
	secret = []byte("TOP-SECRET-" + strconv.FormatInt(time.Now().UnixNano(), 36))
	root = filepath.Join(dir, "root")
	big = make([]byte, 5<<20+3)
	for i := range big {
		big[i] = byte(i*7 + i>>11)
	}
	files := map[string][]byte{
		"secret":              secret,
		"root/hello.txt":      []byte("hello, world\n"),
		"root/index.html":     []byte("<h1>root</h1>"),
		"root/sub/index.html": []byte("<h1>sub</h1>"),
		"root/sp ace.txt":     []byte("space"),
		"root/data.qqq":       []byte{0, 1, 2},
		"root/big.dat":        big,
		"root/mid.dat":        big[:40000], // over DefaultInMemory
	}
	for name, b := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(root, "nodir"), 0o755); err != nil {
		t.Fatal(err)
	}
	for link, target := range map[string]string{"link": "../secret", "linkdir": "..", "inlink": "hello.txt"} {
		if err := os.Symlink(target, filepath.Join(root, link)); err != nil {
			t.Fatal(err)
		}
	}
	return root, secret, big
}

// newDir opens a Dir over root; when the test ends, after the server has
// shut down and the Dir is closed, no file under root may still be open.
func newDir(t *testing.T, root string, opts ...static.Options) *static.Dir {
	t.Helper()
	t.Cleanup(func() { waitOpen(t, root, 0) })
	var o static.Options
	if len(opts) > 0 {
		o = opts[0]
	}
	d, err := static.NewDirOptions(root, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// openUnder lists the files under dir that this process has open, once
// for each descriptor.
func openUnder(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	for _, fd := range fdtest.Open(t, func(target string) bool { return strings.HasPrefix(target, dir+"/") }) {
		out = append(out, fd.Target)
	}
	return out
}

// waitOpen waits until no file under dir is open more than max times:
// the responses' cleanups have let go of what their handlers opened. (A
// Dir may keep a file open between responses, as an open-file cache does,
// once per name it was asked for; none once it is closed.)
func waitOpen(t *testing.T, dir string, max int) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		open := openUnder(t, dir)
		count := map[string]int{}
		worst := 0
		for _, f := range open {
			count[f]++
			worst = maxInt(worst, count[f])
		}
		if worst <= max {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("files still open %v after the responses (at most %d each allowed): a cleanup did not run", open, max)
		}
		time.Sleep(time.Millisecond)
	}
}

func maxInt(a, b int) int {
	if a > b {
		return a
	}
	return b
}

func TestDir(t *testing.T) {
	for _, cfg := range []struct {
		name string
		opts static.Options
	}{
		{"small files from memory", static.Options{}},
		{"every file by sendfile", static.Options{InMemory: -1}},
		{"no open-file cache", static.Options{CacheEntries: -1}},
	} {
		t.Run(cfg.name, func(t *testing.T) { testDir(t, cfg.opts) })
	}
}

func testDir(t *testing.T, opts static.Options) {
	root, _, big := tree(t)
	addr := serve(t, newDir(t, root, opts))
	tests := []struct {
		method, target string
		status         int
		ctype          string
		body           []byte
		header         map[string]string
	}{
		{"GET", "/hello.txt", 200, "text/plain; charset=utf-8", []byte("hello, world\n"), nil},
		{"GET", "/hello%2etxt", 200, "text/plain; charset=utf-8", []byte("hello, world\n"), nil},
		{"GET", "/hello.txt?x=1", 200, "text/plain; charset=utf-8", []byte("hello, world\n"), nil},
		{"GET", "/sp%20ace.txt", 200, "text/plain; charset=utf-8", []byte("space"), nil},
		{"GET", "/data.qqq", 200, "application/octet-stream", []byte{0, 1, 2}, nil},
		{"GET", "/big.dat", 200, "", big, nil},
		{"GET", "/mid.dat", 200, "", big[:40000], nil},
		{"GET", "/", 200, "text/html; charset=utf-8", []byte("<h1>root</h1>"), nil},
		{"GET", "/sub/", 200, "text/html; charset=utf-8", []byte("<h1>sub</h1>"), nil},
		{"GET", "/sub/index.html", 200, "text/html; charset=utf-8", []byte("<h1>sub</h1>"), nil},
		{"GET", "/inlink", 200, "", []byte("hello, world\n"), nil},
		{"GET", "/sub", 301, "", nil, map[string]string{"Location": "/sub/"}},
		// A doubled slash must not turn the redirect into a
		// scheme-relative URL pointing at another host ("//sub/").
		{"GET", "//sub", 301, "", nil, map[string]string{"Location": "/sub/"}},
		{"GET", "///sub?a=b", 301, "", nil, map[string]string{"Location": "/sub/?a=b"}},
		{"GET", "/nodir/", 404, "", nil, nil},
		{"GET", "/hello.txt/", 404, "", nil, nil}, // open("hello.txt/") is ENOTDIR
		{"GET", "/missing", 404, "", nil, nil},
		{"GET", "/sub/missing.html", 404, "", nil, nil},
		{"HEAD", "/hello.txt", 200, "text/plain; charset=utf-8", nil, map[string]string{"Content-Length": "13"}},
		{"HEAD", "/big.dat", 200, "", nil, map[string]string{"Content-Length": strconv.Itoa(len(big))}},
		{"POST", "/hello.txt", 405, "", nil, map[string]string{"Allow": "GET, HEAD"}},
		{"DELETE", "/hello.txt", 405, "", nil, map[string]string{"Allow": "GET, HEAD"}},
		// "OPTIONS *" asks about the server: 200, as net/http answers.
		{"OPTIONS", "*", 200, "", []byte{}, map[string]string{"Allow": "GET, HEAD", "Content-Length": "0"}},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.target, func(t *testing.T) {
			r := do(t, addr, tt.method, tt.target)
			if r.status != tt.status {
				t.Fatalf("status %d, want %d\n%q", r.status, tt.status, r.raw[:min(len(r.raw), 300)])
			}
			if tt.ctype != "" && r.header.Get("Content-Type") != tt.ctype {
				t.Errorf("Content-Type %q, want %q", r.header.Get("Content-Type"), tt.ctype)
			}
			if tt.body != nil && !bytes.Equal(r.body, tt.body) {
				t.Errorf("body differs (%d bytes, want %d)", len(r.body), len(tt.body))
			}
			if tt.method == "HEAD" && len(r.raw) > 0 && !bytes.HasSuffix(r.raw, []byte("\r\n\r\n")) {
				t.Errorf("HEAD response carries a body: %q", r.raw)
			}
			for k, v := range tt.header {
				if got := r.header.Get(k); got != v {
					t.Errorf("%s: %q, want %q", k, got, v)
				}
			}
			if tt.status == 200 && tt.method != "OPTIONS" && r.header.Get("Last-Modified") == "" {
				t.Error("no Last-Modified")
			}
		})
	}
}

// No request may read a file outside the root, whatever the encoding; the
// requests go out raw, as an attacker would send them.
func TestDirTraversal(t *testing.T) {
	for _, opts := range []static.Options{{}, {CacheEntries: -1}} {
		t.Run("cache="+strconv.Itoa(opts.CacheEntries), func(t *testing.T) { testTraversal(t, opts) })
	}
}

func testTraversal(t *testing.T, opts static.Options) {
	root, secret, _ := tree(t)
	addr := serve(t, newDir(t, root, opts))
	passwd, _ := os.ReadFile("/etc/passwd")
	for _, target := range []string{
		"/../secret",
		"/%2e%2e/secret",
		"/%2E%2E/secret",
		"/.%2e/secret",
		"/a/%2e%2e/%2e%2e/secret",
		"/sub/../../secret",
		"/./../secret",
		"//../secret",
		"/..%2fsecret",
		"/%2e%2e%2fsecret",
		"/sub/..%2f..%2fsecret",
		"/..%5csecret",
		"/..\\secret",
		"/%252e%252e/secret",
		"/%2fetc%2fpasswd",
		"/%2Fetc/passwd",
		"/etc/passwd",
		"/../../../../../../etc/passwd",
		"/a%00b",
		"/hello.txt%00.html",
		"/%",
		"/%zz",
		"/link",
		"/linkdir/secret",
		"/linkdir/root/hello.txt",
		"/linkdir",
		"/linkdir/",
		"../secret",
		"secret",
	} {
		t.Run(target, func(t *testing.T) {
			r := do(t, addr, "GET", target)
			if bytes.Contains(r.raw, secret) {
				t.Fatalf("the secret leaked: %q", r.raw)
			}
			if len(passwd) > 0 && bytes.Contains(r.raw, passwd[:min(len(passwd), 32)]) {
				t.Fatalf("/etc/passwd leaked: %q", r.raw)
			}
			switch r.status {
			case 400, 403, 404:
			default:
				t.Errorf("status %d, want 400, 403 or 404", r.status)
			}
		})
	}
}

// The file sent with sendfile is let go by the response's cleanup after
// the last byte, HEAD included, and also when the client goes away
// half-way. Without the open-file cache it is closed after every response;
// with it, it is open at most once between responses. Either way nothing
// is open once the server is down and the Dir closed.
func TestDirReleasesFileAfterResponse(t *testing.T) {
	for _, tt := range []struct {
		name    string
		opts    static.Options
		between int // fds per file allowed between responses
	}{
		{"no cache", static.Options{CacheEntries: -1}, 0},
		{"cache", static.Options{}, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			root, _, big := tree(t)
			d, err := static.NewDirOptions(root, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			addr, stop := serveStop(t, d)

			// Keep-alive: the connection stays open, the file must not.
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(waitLimit))
			br := bufio.NewReader(c)
			for i, method := range []string{"GET", "HEAD", "GET"} {
				io.WriteString(c, method+" /big.dat HTTP/1.1\r\nHost: test\r\n\r\n")
				resp, err := http.ReadResponse(br, &http.Request{Method: method})
				if err != nil {
					t.Fatal(err)
				}
				body, err := io.ReadAll(resp.Body)
				want := big
				if method == "HEAD" {
					want = nil
				}
				if err != nil || !bytes.Equal(body, want) {
					t.Fatalf("request %d: body differs (%d bytes), %v", i, len(body), err)
				}
				waitOpen(t, root, tt.between)
			}

			// A client that reads a little and resets: the writer aborts,
			// and the cleanup still runs.
			dc, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			dc.SetDeadline(time.Now().Add(waitLimit))
			io.WriteString(dc, "GET /big.dat HTTP/1.1\r\nHost: test\r\n\r\n")
			if _, err := io.ReadFull(dc, make([]byte, 4096)); err != nil {
				t.Fatal(err)
			}
			rc := dc.(*net.TCPConn)
			rc.SetLinger(0)
			rc.Close()
			waitOpen(t, root, tt.between)

			stop()
			d.Close()
			waitOpen(t, root, 0)
		})
	}
}

// A FIFO (or any special file) under the root is not served, and opening
// it must not block the worker until some writer appears.
func TestDirSpecialFiles(t *testing.T) {
	root, _, _ := tree(t)
	if err := unix.Mkfifo(filepath.Join(root, "fifo"), 0o644); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	addr := serve(t, newDir(t, root))
	for _, target := range []string{"/fifo", "/fifo/"} {
		if r := do(t, addr, "GET", target); r.status != 404 {
			t.Errorf("GET %s: status %d, want 404", target, r.status)
		}
	}
}

// FS serves an fs.FS from memory with the same rules.
func TestFS(t *testing.T) {
	fsys := fstest.MapFS{
		"index.html":      {Data: []byte("<p>home</p>")},
		"css/site.css":    {Data: []byte("body{}")},
		"docs/index.html": {Data: []byte("<p>docs</p>")},
		"docs/a.txt":      {Data: []byte("alpha")},
		"empty/.keep":     {Data: nil},
	}
	s, err := static.NewFS(fsys)
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, s)
	tests := []struct {
		method, target string
		status         int
		ctype          string
		body           string
		header         map[string]string
	}{
		{"GET", "/", 200, "text/html; charset=utf-8", "<p>home</p>", nil},
		{"GET", "/index.html", 200, "text/html; charset=utf-8", "<p>home</p>", nil},
		{"GET", "/css/site.css", 200, "text/css; charset=utf-8", "body{}", nil},
		{"GET", "/docs/", 200, "text/html; charset=utf-8", "<p>docs</p>", nil},
		{"GET", "/docs/a.txt", 200, "text/plain; charset=utf-8", "alpha", nil},
		{"GET", "/docs/%61.txt", 200, "text/plain; charset=utf-8", "alpha", nil},
		{"GET", "/docs", 301, "", "", map[string]string{"Location": "/docs/"}},
		{"GET", "//docs", 301, "", "", map[string]string{"Location": "/docs/"}},
		{"GET", "/empty/", 404, "", "", nil},
		{"GET", "/docs/a.txt/", 404, "", "", nil},
		{"GET", "/missing", 404, "", "", nil},
		{"GET", "/../index.html", 404, "", "", nil},
		{"GET", "/docs/%2e%2e/index.html", 404, "", "", nil},
		{"GET", "/docs%2fa.txt", 404, "", "", nil},
		{"HEAD", "/docs/a.txt", 200, "text/plain; charset=utf-8", "", map[string]string{"Content-Length": "5"}},
		{"PUT", "/docs/a.txt", 405, "", "", map[string]string{"Allow": "GET, HEAD"}},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.target, func(t *testing.T) {
			r := do(t, addr, tt.method, tt.target)
			if r.status != tt.status {
				t.Fatalf("status %d, want %d\n%q", r.status, tt.status, r.raw)
			}
			if tt.ctype != "" && r.header.Get("Content-Type") != tt.ctype {
				t.Errorf("Content-Type %q, want %q", r.header.Get("Content-Type"), tt.ctype)
			}
			if tt.status == 200 && string(r.body) != tt.body {
				t.Errorf("body %q, want %q", r.body, tt.body)
			}
			if tt.method == "HEAD" && !bytes.HasSuffix(r.raw, []byte("\r\n\r\n")) {
				t.Errorf("HEAD response carries a body: %q", r.raw)
			}
			for k, v := range tt.header {
				if got := r.header.Get(k); got != v {
					t.Errorf("%s: %q, want %q", k, got, v)
				}
			}
		})
	}
}

// NewDir fails on a root that is not a directory.
func TestNewDirErrors(t *testing.T) {
	if _, err := static.NewDir(filepath.Join(t.TempDir(), "nope")); err == nil {
		t.Error("NewDir of a missing directory succeeded")
	}
}

// A Dir declares a request non-blocking (processor.Inliner) only when its
// file is open in the cache and needs no stat, so that a reader loop that
// serves it inline never waits on the disk.
func TestDirInline(t *testing.T) {
	root, _, _ := tree(t)
	req := func(method, path string) *stages.Request {
		return &stages.Request{Method: []byte(method), Path: []byte(path)}
	}
	nocache := newDir(t, root, static.Options{CacheEntries: -1}) // first: its cleanups run last
	d := newDir(t, root, static.Options{Revalidate: 200 * time.Millisecond})
	addr := serve(t, d)
	if d.Inline(req("GET", "/hello.txt")) {
		t.Fatal("a file never opened was declared non-blocking")
	}
	resp, err := http.Get("http://" + addr + "/hello.txt")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if !d.Inline(req("GET", "/hello.txt")) || !d.Inline(req("HEAD", "/hello.txt")) {
		t.Error("a cached, fresh file was not declared non-blocking")
	}
	if !d.Inline(req("POST", "/hello.txt")) {
		t.Error("a 405 was not declared non-blocking")
	}
	if d.Inline(req("GET", "/other.txt")) {
		t.Error("an uncached name was declared non-blocking")
	}
	if r := do(t, addr, "GET", "/other.txt"); r.status != 404 {
		t.Fatalf("GET /other.txt: %d", r.status)
	}
	if !d.Inline(req("GET", "/other.txt")) {
		t.Error("a name known missing was not declared non-blocking")
	}
	if r := do(t, addr, "GET", "/other.txt"); r.status != 404 || string(r.body) != "404 page not found\n" {
		t.Errorf("GET /other.txt, known missing: %d %q", r.status, r.body)
	}
	time.Sleep(300 * time.Millisecond) // past Revalidate: the next use stats the file
	if d.Inline(req("GET", "/hello.txt")) {
		t.Error("a cached file due for a stat was declared non-blocking")
	}
	if d.Inline(req("GET", "/other.txt")) {
		t.Error("a missing name due for a check was declared non-blocking")
	}
	if nocache.Inline(req("GET", "/hello.txt")) {
		t.Error("a Dir without a cache declared a file non-blocking")
	}
}

// TestSmallFilesInMemory: files up to Options.InMemory are held in memory
// with their open file, larger ones are not, and a ranged or conditional
// request of a held file is answered from it as from the file.
func TestSmallFilesInMemory(t *testing.T) {
	root, _, big := tree(t)
	for _, tc := range []struct {
		name      string
		opts      static.Options
		wantFiles int
		wantBytes int64
	}{
		{"default", static.Options{}, 2, 13 + 13}, // hello.txt, index.html
		{"larger", static.Options{InMemory: 50000}, 3, 13 + 13 + 40000},
		// mid.dat, asked for third, would pass the budget: sendfile.
		{"budget", static.Options{InMemory: 50000, InMemoryBudget: 40010}, 2, 13 + 13},
		// Each file evicts the one before, and big.dat is not held.
		{"evicted", static.Options{CacheEntries: 1}, 0, 0},
		{"never", static.Options{InMemory: -1}, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newDir(t, root, tc.opts)
			addr := serve(t, d)
			for _, target := range []string{"/hello.txt", "/", "/mid.dat", "/big.dat"} {
				if r := do(t, addr, "GET", target); r.status != 200 {
					t.Fatalf("GET %s: %d", target, r.status)
				}
			}
			if files, n := d.InMemoryFiles(); files != tc.wantFiles || n != tc.wantBytes {
				t.Errorf("in memory: %d files, %d bytes; want %d, %d", files, n, tc.wantFiles, tc.wantBytes)
			}
			r := do(t, addr, "GET", "/mid.dat")
			if !bytes.Equal(r.body, big[:40000]) {
				t.Errorf("mid.dat: %d bytes differ", len(r.body))
			}
			resp, body := get(t, addr, "/hello.txt", "Range: bytes=7-11\r\n")
			if resp.StatusCode != 206 || body != "world" {
				t.Errorf("range of a held file: %d %q", resp.StatusCode, body)
			}
			etag := do(t, addr, "HEAD", "/hello.txt").header.Get("ETag")
			resp, body = get(t, addr, "/hello.txt", "If-None-Match: "+etag+"\r\n")
			if resp.StatusCode != 304 || body != "" {
				t.Errorf("conditional GET of a held file: %d %q", resp.StatusCode, body)
			}
			d.Close()
			if files, n := d.InMemoryFiles(); files != 0 || n != 0 {
				t.Errorf("after Close: %d files, %d bytes still held", files, n)
			}
		})
	}
}

// A request that reaches a closed Dir (it took the handler just before a
// reload replaced it, and stalled) is told to come back, not that the file
// is missing.
func TestClosedDirAnswersRetry(t *testing.T) {
	root, _, _ := tree(t)
	d := newDir(t, root)
	addr := serve(t, d)
	if r := do(t, addr, "GET", "/hello.txt"); r.status != 200 {
		t.Fatalf("before Close: %d", r.status)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	r := do(t, addr, "GET", "/hello.txt")
	if r.status != 503 || r.header.Get("Retry-After") == "" {
		t.Fatalf("after Close: %d, Retry-After %q; want 503 with Retry-After", r.status, r.header.Get("Retry-After"))
	}
	waitOpen(t, root, 0)
}
