package rdmahttp

import (
	"bytes"
	"crypto/sha256"
	"strconv"
	"strings"
	"testing"

	"github.com/quartet-server/quartet/rdma/deliver"
)

// FuzzParseRequest feeds parseRequest arbitrary X-RDMA-* values, as a
// client may send them. What it accepts must be a whole request (a mode,
// an endpoint, an op id above 0 and, for server-writes, a buffer), and
// must read back the same once written as the client writes it: the
// server and the client agree on what a value means.
func FuzzParseRequest(f *testing.F) {
	f.Add("server-writes", "10.0.0.2:18515", "7", "addr=0x7f00, rkey=0x1234, len=65536")
	f.Add("client-reads", "[fe80::1]:18515", "1", "")
	f.Add("SERVER-WRITES ", "10.0.0.2:1", "18446744073709551615", "len=0,rkey=1,addr=0")
	f.Add("server-writes", "10.0.0.2:1", "9", "addr=0x1, addr=0x2, rkey=0x3, len=4")
	f.Add("server-writes", "10.0.0.2:1", "9", "addr=0x_1, rkey=0b1, len=+4")
	f.Add("off", "", "", "")
	f.Fuzz(func(t *testing.T, mode, endpoint, op, buffer string) {
		headers := map[string]string{HeaderMode: mode, HeaderEndpoint: endpoint, HeaderOp: op, HeaderBuffer: buffer}
		q, err := parseRequest(func(name string) string { return headers[name] })
		if err != nil || q.Mode == deliver.ModeOff {
			if err == nil && mode != "" {
				t.Fatalf("mode %q: no request and no error", mode)
			}
			return
		}
		if !q.Endpoint.IsValid() || q.Op == 0 || q.Buffer.Len < 0 {
			t.Fatalf("accepted %+v from %q", q, headers)
		}
		if q.Mode == deliver.ModeServerWrites {
			// What formatRegion writes, and nothing else: each key
			// once, no sign, hexadecimal only after 0x.
			for _, bad := range []string{"+", "-", "_", "0o", "0b", "0X"} {
				if strings.Contains(buffer, bad) {
					t.Fatalf("accepted a buffer with %q: %q", bad, buffer)
				}
			}
			for _, key := range []string{"addr=", "rkey=", "len="} {
				if strings.Count(buffer, key) != 1 {
					t.Fatalf("accepted a buffer with %d of %q: %q", strings.Count(buffer, key), key, buffer)
				}
			}
		}
		again := map[string]string{
			HeaderMode:     q.Mode.String(),
			HeaderEndpoint: q.Endpoint.String(),
			HeaderOp:       strconv.FormatUint(q.Op, 10),
		}
		if q.Mode == deliver.ModeServerWrites {
			again[HeaderBuffer] = formatRegion(q.Buffer)
		}
		q2, err := parseRequest(func(name string) string { return again[name] })
		if err != nil || q2 != q {
			t.Fatalf("%q read as %+v, written as %q, read back as %+v (%v)", headers, q, again, q2, err)
		}
	})
}

// FuzzParseDigest: an accepted sha-256 member is 32 bytes, and a
// Repr-Digest written by digestValue reads back as the same sum.
func FuzzParseDigest(f *testing.F) {
	sum := sha256.Sum256([]byte("body"))
	f.Add(digestValue(sum))
	f.Add("sha-512=:AAAA:, sha-256=:" + digestValue(sum)[len("sha-256=:"):])
	f.Add("sha-256=:@@:")
	f.Add("sha-256")
	f.Fuzz(func(t *testing.T, v string) {
		got, ok, err := parseDigest(v)
		if err == nil && ok && len(got) != sha256.Size {
			t.Fatalf("%q: accepted a sum of %d bytes", v, len(got))
		}
		if !ok && (err != nil || got != nil) {
			t.Fatalf("%q: no member, yet %x, %v", v, got, err)
		}
		if err == nil && ok {
			back, ok2, err2 := parseDigest(digestValue([sha256.Size]byte(got)))
			if !ok2 || err2 != nil || !bytes.Equal(back, got) {
				t.Fatalf("%q: %x does not read back (%x, %v)", v, got, back, err2)
			}
		}
	})
}
