// Package peers holds the servers Quartet is compared against by
// `quartet bench compare`: net/http, a bare gnet v2 server and fasthttp;
// gnetmsg, a bare gnet v2 messenger echo (`quartet bench compare
// --msg`); and sendfile, the floor of a Go static-file server, which
// serves -root's files (and /hello) with the calls nginx makes and
// nothing else (`quartet bench compare --static --only nginx,sendfile`).
// It is a separate module so their dependencies stay out of Quartet's
// go.mod; it takes Quartet's own packages (gnetmsg's codec) from this
// checkout (a replace directive), so it builds only inside one. The
// other HTTP commands serve the same endpoints as Quartet's built-in
// handler:
//
//	GET  /hello       13-byte "Hello, World!"
//	GET  /sleep?ms=N  answers after N milliseconds
//	GET  /compute?n=N computes N rounds (Compute), answers the hash in hex
//	GET  /bytes?n=N   N bytes of 'x'
//	POST /echo        the request body
//
// Each listens on -addr (default 127.0.0.1:0) and prints its base URL,
// http://IP:PORT (gnetmsg: msg://IP:PORT), as the first line on stdout,
// which is how the tool finds it; it stops on SIGINT or SIGTERM.
package peers

import "strconv"

// Compute is /compute's work, the same rounds as Quartet's built-in
// /compute (runtime/builtin.go): FNV-1a over a fixed 512-byte block, n
// times, each round seeded by the last, so that a CPU-bound handler costs
// the same everywhere.
func Compute(n int) uint32 {
	const prime = 16777619
	h := uint32(2166136261)
	for range min(n, MaxCompute) {
		for i := range 512 {
			h = (h ^ uint32(byte(i)^byte(h))) * prime
		}
	}
	return h
}

// ComputeAnswer is /compute's response body.
func ComputeAnswer(n int) []byte {
	return append(strconv.AppendUint(nil, uint64(Compute(n)), 16), '\n')
}

// MaxCompute bounds /compute?n=, as Quartet does.
const MaxCompute = 1_000_000

// MaxBytes bounds /bytes?n= so a typo cannot exhaust memory.
const MaxBytes = 64 << 20

// Query returns the integer value of key in a raw query string such as
// "ms=5&x=1", or 0.
func Query(raw, key string) int {
	for raw != "" {
		var kv string
		kv, raw, _ = cut(raw, '&')
		k, v, _ := cut(kv, '=')
		if k == key {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return 0
			}
			return n
		}
	}
	return 0
}

func cut(s string, sep byte) (before, after string, found bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == sep {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

// Hello is the /hello body.
var Hello = []byte("Hello, World!")
