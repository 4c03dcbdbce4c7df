package rdmahttp

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/quartet-server/quartet/rdma/deliver"
)

// Header names of the protocol (docs/rdma-http.md).
const (
	HeaderMode     = "X-RDMA-Mode"
	HeaderEndpoint = "X-RDMA-Endpoint"
	HeaderOp       = "X-RDMA-Op"
	HeaderBuffer   = "X-RDMA-Buffer"
	HeaderChannel  = "X-RDMA-Channel"
	HeaderWritten  = "X-RDMA-Written"
	HeaderRead     = "X-RDMA-Read"
	HeaderFallback = "X-RDMA-Fallback"
	HeaderDigest   = "Repr-Digest"
)

// formatRegion writes an (address, key, length) triple as X-RDMA-Buffer
// and X-RDMA-Read carry it.
func formatRegion(r deliver.Region) string {
	return fmt.Sprintf("addr=0x%x, rkey=0x%x, len=%d", r.Addr, r.RKey, r.Len)
}

// parseRegion reads what formatRegion writes (docs/rdma-http.md): addr
// and rkey in hexadecimal after "0x", len in decimal, each once, in any
// order. Nothing else is taken: a value the server reads differently from
// what the client meant would send a body to the wrong memory.
func parseRegion(s string) (deliver.Region, error) {
	var r deliver.Region
	var have [3]bool
	for _, part := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return r, fmt.Errorf("region %q: want key=value", s)
		}
		var i int
		var err error
		switch k {
		case "addr":
			i = 0
			r.Addr, err = parseHex(v, 64)
		case "rkey":
			i = 1
			var k32 uint64
			k32, err = parseHex(v, 32)
			r.RKey = uint32(k32)
		case "len":
			i = 2
			if v == "" || strings.Trim(v, "0123456789") != "" {
				err = errors.New("want decimal digits")
			} else {
				r.Len, err = strconv.ParseInt(v, 10, 64)
			}
		default:
			return r, fmt.Errorf("region %q: unknown key %q", s, k)
		}
		if err != nil {
			return r, fmt.Errorf("region %q: %s: %w", s, k, err)
		}
		if have[i] {
			return r, fmt.Errorf("region %q: %s given twice", s, k)
		}
		have[i] = true
	}
	if !have[0] || !have[1] || !have[2] {
		return r, fmt.Errorf("region %q: need addr, rkey and len", s)
	}
	return r, nil
}

// parseHex reads "0x" and hexadecimal digits into a number of bits bits.
func parseHex(v string, bits int) (uint64, error) {
	digits, ok := strings.CutPrefix(v, "0x")
	if !ok || digits == "" || strings.Trim(digits, "0123456789abcdefABCDEF") != "" {
		return 0, errors.New("want 0x and hexadecimal digits")
	}
	return strconv.ParseUint(digits, 16, bits)
}

// parseRequest reads what a GET asked for in its X-RDMA-* headers; get
// returns a header's value or "". ModeOff with a nil error means the
// client did not ask.
func parseRequest(get func(string) string) (deliver.Target, error) {
	var q deliver.Target
	m := get(HeaderMode)
	if m == "" {
		return q, nil
	}
	mode, err := deliver.ParseMode(m)
	if err != nil || mode == deliver.ModeOff {
		return q, fmt.Errorf("%s: %q", HeaderMode, m)
	}
	q.Mode = mode
	if q.Endpoint, err = netip.ParseAddrPort(get(HeaderEndpoint)); err != nil {
		return q, fmt.Errorf("%s: %w", HeaderEndpoint, err)
	}
	if q.Op, err = strconv.ParseUint(get(HeaderOp), 10, 64); err != nil || q.Op == 0 {
		return q, fmt.Errorf("%s: want a decimal id > 0", HeaderOp)
	}
	if mode == deliver.ModeServerWrites {
		if q.Buffer, err = parseRegion(get(HeaderBuffer)); err != nil {
			return q, fmt.Errorf("%s: %w", HeaderBuffer, err)
		}
	}
	return q, nil
}

// digestValue formats a sha-256 Repr-Digest (RFC 9530).
func digestValue(sum [sha256.Size]byte) string {
	return "sha-256=:" + base64.StdEncoding.EncodeToString(sum[:]) + ":"
}

// parseDigest extracts the sha-256 member of a Repr-Digest; ok is false
// when there is none.
func parseDigest(v string) (sum []byte, ok bool, err error) {
	for _, m := range strings.Split(v, ",") {
		k, val, found := strings.Cut(strings.TrimSpace(m), "=")
		if !found || k != "sha-256" {
			continue
		}
		val = strings.TrimSuffix(strings.TrimPrefix(val, ":"), ":")
		b, err := base64.StdEncoding.DecodeString(val)
		if err != nil || len(b) != sha256.Size {
			return nil, true, fmt.Errorf("%s: bad sha-256 %q", HeaderDigest, val)
		}
		return b, true, nil
	}
	return nil, false, nil
}
