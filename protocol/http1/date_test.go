package http1

import (
	"testing"
	"time"
)

func TestDateCache(t *testing.T) {
	var d DateCache
	t0 := time.Date(2026, 11, 21, 6, 30, 0, 0, time.UTC)
	a := d.Get(t0)
	if string(a) != "Sat, 21 Nov 2026 06:30:00 GMT" {
		t.Errorf("date %q", a)
	}
	if b := d.Get(t0.Add(999 * time.Millisecond)); &b[0] != &a[0] {
		t.Error("reformatted within the same second")
	}
	if c := d.Get(t0.Add(time.Second)); string(c) != "Sat, 21 Nov 2026 06:30:01 GMT" {
		t.Errorf("next second %q", c)
	}
	local := time.FixedZone("X", 3600)
	if e := d.Get(t0.Add(2 * time.Second).In(local)); string(e) != "Sat, 21 Nov 2026 06:30:02 GMT" {
		t.Errorf("from a local time %q", e)
	}
}
