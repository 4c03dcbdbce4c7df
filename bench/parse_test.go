package bench

import (
	"slices"
	"testing"
)

// sink records what the parser reports.
type sink struct {
	head     bool
	statuses []int
	closes   []bool
	sizes    []int64
}

func (s *sink) noBody() bool { return s.head }
func (s *sink) done(status int, close bool, size int64) {
	s.statuses = append(s.statuses, status)
	s.closes = append(s.closes, close)
	s.sizes = append(s.sizes, size)
}

func TestRespParser(t *testing.T) {
	tests := []struct {
		name     string
		in       string
		head     bool
		statuses []int
		closes   []bool
		sizes    []int64 // each response's size; by default the whole input is one response
		eof      bool    // a close completes one more response
		wantErr  bool
	}{
		{name: "content-length", in: "HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nHello, World!",
			statuses: []int{200}, closes: []bool{false}},
		{name: "two pipelined", in: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhiHTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
			statuses: []int{200, 404}, closes: []bool{false, false}, sizes: []int64{40, 45}},
		{name: "chunked with trailer", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n",
			statuses: []int{200}, closes: []bool{false}},
		{name: "connection close", in: "HTTP/1.1 503 Busy\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
			statuses: []int{503}, closes: []bool{true}},
		{name: "http/1.0 closes", in: "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx",
			statuses: []int{200}, closes: []bool{true}},
		{name: "interim 100", in: "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
			statuses: []int{201}, closes: []bool{false}, sizes: []int64{68}},
		{name: "head ignores length", head: true, in: "HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n",
			statuses: []int{200}, closes: []bool{false}},
		{name: "204 no body", in: "HTTP/1.1 204 No Content\r\n\r\n", statuses: []int{204}, closes: []bool{false}},
		{name: "until close", in: "HTTP/1.1 200 OK\r\n\r\nstreamed body", eof: true},
		{name: "garbage", in: "SMTP ready\r\n\r\n", wantErr: true},
		{name: "bad chunk", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", wantErr: true},
		{name: "bad length", in: "HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n", wantErr: true},
	}
	for _, tt := range tests {
		// Every split point: the parser must give the same answer however
		// the bytes arrive.
		for split := 0; split <= len(tt.in); split++ {
			var p respParser
			s := &sink{head: tt.head}
			err := p.feed([]byte(tt.in[:split]), s)
			if err == nil {
				err = p.feed([]byte(tt.in[split:]), s)
			}
			if (err != nil) != tt.wantErr {
				t.Fatalf("%s split %d: err %v, want error %v", tt.name, split, err, tt.wantErr)
			}
			if tt.wantErr {
				continue
			}
			if tt.eof {
				if complete, status, size := p.eof(); !complete || status != 200 || size != int64(len(tt.in)) {
					t.Fatalf("%s split %d: eof = %v %d size %d, want size %d", tt.name, split, complete, status, size, len(tt.in))
				}
				continue
			}
			sizes := tt.sizes
			if sizes == nil {
				sizes = []int64{int64(len(tt.in))}
			}
			if !slices.Equal(s.sizes, sizes) {
				t.Fatalf("%s split %d: sizes %v, want %v", tt.name, split, s.sizes, sizes)
			}
			if len(s.statuses) != len(tt.statuses) {
				t.Fatalf("%s split %d: statuses %v, want %v", tt.name, split, s.statuses, tt.statuses)
			}
			for i := range s.statuses {
				if s.statuses[i] != tt.statuses[i] || s.closes[i] != tt.closes[i] {
					t.Fatalf("%s split %d: got %v %v, want %v %v", tt.name, split, s.statuses, s.closes, tt.statuses, tt.closes)
				}
			}
			if p.state != stHeader || len(p.carry) != 0 {
				t.Fatalf("%s split %d: parser left in state %d with %d carried bytes", tt.name, split, p.state, len(p.carry))
			}
		}
	}
}

func TestParseMixEntry(t *testing.T) {
	tests := []struct {
		in      string
		want    RequestSpec
		wantErr bool
	}{
		{in: "/hello", want: RequestSpec{Path: "/hello"}},
		{in: "POST /echo body=1024 weight=3", want: RequestSpec{Method: "POST", Path: "/echo", BodySize: 1024, Weight: 3}},
		{in: "GET /x X-A:1", want: RequestSpec{Method: "GET", Path: "/x", Headers: map[string]string{"X-A": "1"}}},
		{in: "GET", wantErr: true},
		{in: "/x body=-1", wantErr: true},
		{in: "/x weight=0", wantErr: true},
	}
	for _, tt := range tests {
		got, err := ParseMixEntry(tt.in)
		if (err != nil) != tt.wantErr {
			t.Fatalf("%q: err %v", tt.in, err)
		}
		if err != nil {
			continue
		}
		if got.Method != tt.want.Method || got.Path != tt.want.Path || got.BodySize != tt.want.BodySize ||
			got.Weight != tt.want.Weight || len(got.Headers) != len(tt.want.Headers) {
			t.Fatalf("%q: got %+v, want %+v", tt.in, got, tt.want)
		}
	}
}

func TestBuildMixInterleaves(t *testing.T) {
	tg := target{host: "h", path: "/"}
	reqs, sched, err := buildMix(tg, []RequestSpec{{Path: "/a", Weight: 2}, {Path: "/b"}, {Method: "HEAD", Path: "/c"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := string(reqs[0].raw); got != "GET /a HTTP/1.1\r\nHost: h\r\n\r\n" {
		t.Fatalf("serialised %q", got)
	}
	if !reqs[2].noBody {
		t.Fatal("HEAD must expect no body")
	}
	if want := []uint16{0, 1, 2, 0}; len(sched) != 4 || sched[0] != want[0] || sched[1] != want[1] || sched[2] != want[2] || sched[3] != want[3] {
		t.Fatalf("schedule %v, want %v", sched, want)
	}
}
