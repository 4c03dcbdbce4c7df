package bench

import (
	"bytes"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// wireRequest is one request serialised once, before the run.
type wireRequest struct {
	raw []byte
	// noBody: the response carries no body whatever its headers say (HEAD).
	noBody bool
}

// buildMix serialises the mix and expands weights into a schedule of
// indexes, so that picking the next request is one increment and no
// random number per request.
func buildMix(t target, mix []RequestSpec) (reqs []wireRequest, schedule []uint16, err error) {
	if len(mix) == 0 {
		mix = []RequestSpec{{Path: t.path}}
	}
	if len(mix) > 1<<16 {
		return nil, nil, fmt.Errorf("bench: mix of %d entries is too large", len(mix))
	}
	for i, m := range mix {
		reqs = append(reqs, serialize(t, m))
		w := m.Weight
		if w == 0 {
			w = 1
		}
		for range w {
			schedule = append(schedule, uint16(i))
		}
	}
	// Interleave the weighted entries rather than send runs of one kind:
	// a stable sort on the position within each entry's own run spreads
	// them evenly (A A B -> A B A).
	pos := make([]int, len(schedule))
	seen := make(map[uint16]int)
	for i, s := range schedule {
		pos[i] = seen[s]
		seen[s]++
	}
	idx := make([]int, len(schedule))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return pos[idx[a]] < pos[idx[b]] })
	out := make([]uint16, len(schedule))
	for i, j := range idx {
		out[i] = schedule[j]
	}
	return reqs, out, nil
}

func serialize(t target, m RequestSpec) wireRequest {
	method := strings.ToUpper(m.Method)
	if method == "" {
		method = "GET"
		if m.BodySize > 0 {
			method = "POST"
		}
	}
	path := m.Path
	if path == "" {
		path = t.path
	}
	var b bytes.Buffer
	b.WriteString(method + " " + path + " HTTP/1.1\r\nHost: " + t.host + "\r\n")
	keys := make([]string, 0, len(m.Headers))
	for k := range m.Headers {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		b.WriteString(k + ": " + m.Headers[k] + "\r\n")
	}
	if m.BodySize > 0 || method == "POST" || method == "PUT" {
		b.WriteString("Content-Length: " + strconv.Itoa(m.BodySize) + "\r\n")
	}
	b.WriteString("\r\n")
	b.Write(bytes.Repeat([]byte{'x'}, m.BodySize))
	return wireRequest{raw: b.Bytes(), noBody: method == "HEAD"}
}

// ParseMixEntry parses the command-line form of a request mix entry:
// "[METHOD] PATH [body=N] [weight=N] [Header:Value]...", e.g.
// "POST /echo body=1024 weight=2 X-Trace:1".
func ParseMixEntry(s string) (RequestSpec, error) {
	var r RequestSpec
	for i, f := range strings.Fields(s) {
		switch {
		case i == 0 && !strings.HasPrefix(f, "/"):
			r.Method = f
		case strings.HasPrefix(f, "/") && r.Path == "":
			r.Path = f
		case strings.HasPrefix(f, "body="):
			n, err := strconv.Atoi(f[len("body="):])
			if err != nil || n < 0 {
				return r, fmt.Errorf("bench: mix %q: bad body size %q", s, f)
			}
			r.BodySize = n
		case strings.HasPrefix(f, "weight="):
			n, err := strconv.Atoi(f[len("weight="):])
			if err != nil || n < 1 {
				return r, fmt.Errorf("bench: mix %q: bad weight %q", s, f)
			}
			r.Weight = n
		case strings.Contains(f, ":"):
			k, v, _ := strings.Cut(f, ":")
			if r.Headers == nil {
				r.Headers = map[string]string{}
			}
			r.Headers[k] = v
		default:
			return r, fmt.Errorf("bench: mix %q: cannot parse %q", s, f)
		}
	}
	if r.Path == "" {
		return r, fmt.Errorf("bench: mix %q: no path", s)
	}
	return r, nil
}
