package processor

import (
	"testing"
)

func TestHeader(t *testing.T) {
	var h Header
	name, value := []byte("X-Reused"), []byte("first")
	h.AddBytes(name, value)
	copy(value, "XXXXX") // the caller reuses its buffer at once
	h.Add("Content-Type", "text/plain")
	h.Add("x-multi", "1")
	h.Add("X-Multi", "2")
	tests := []struct {
		name string
		get  string
		want string
		has  bool
	}{
		{"AddBytes copies", "x-reused", "first", true},
		{"case-insensitive", "CONTENT-TYPE", "text/plain", true},
		{"first of several", "X-Multi", "1", true},
		{"absent", "X-None", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := h.Get(tt.get); got != tt.want || h.Has(tt.get) != tt.has {
				t.Errorf("Get(%q) = %q, Has %v; want %q, %v", tt.get, got, h.Has(tt.get), tt.want, tt.has)
			}
		})
	}
	h.Set("X-Multi", "3")
	h.SetBytes([]byte("x-reused"), []byte("second"))
	var seen []string
	h.Visit(func(name, value string) bool {
		seen = append(seen, name+"="+value)
		return true
	})
	want := []string{"Content-Type=text/plain", "X-Multi=3", "x-reused=second"}
	if len(seen) != len(want) {
		t.Fatalf("Visit saw %q, want %q", seen, want)
	}
	for i := range want {
		if seen[i] != want[i] {
			t.Errorf("Visit saw %q, want %q", seen, want)
		}
	}
	h.frozen = true
	h.Add("X-Late", "1")
	h.Del("Content-Type")
	if h.Has("X-Late") || !h.Has("Content-Type") {
		t.Error("a frozen header changed")
	}
	h.reset()
	if h.Has("Content-Type") || len(h.fields) != 0 || h.frozen {
		t.Error("reset left fields")
	}
}

func TestHeaderAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under the race detector")
	}
	var h Header
	name, value := []byte("X-Bytes"), []byte("value")
	fill := func() {
		h.reset()
		h.Add("Content-Type", "text/plain")
		h.AddBytes(name, value)
		h.Set("Cache-Control", "no-store")
		h.SetBytes(name, value)
		h.Del("Content-Type")
		_ = h.Get("cache-control")
	}
	fill() // grow the arrays once
	if n := testing.AllocsPerRun(100, fill); n != 0 {
		t.Errorf("%v allocations per request", n)
	}
}
