package static

import "testing"

func TestParseRange(t *testing.T) {
	const size = 10
	const huge = "99999999999999999999" // over an int64
	type want struct {
		off, n        int64
		ok, unsatisfy bool
	}
	for _, tt := range []struct {
		h    string
		want want
	}{
		{"bytes=2-5", want{2, 4, true, false}},
		{"bytes=7-", want{7, 3, true, false}},
		{"bytes=-3", want{7, 3, true, false}},
		{"bytes=8-100", want{8, 2, true, false}},
		{"Bytes=2-5", want{2, 4, true, false}}, // §14.1: units compare case-insensitively
		{"BYTES=-1", want{9, 1, true, false}},
		{"bytes= 2 - 5 ", want{2, 4, true, false}},
		{"bytes=10-", want{ok: false, unsatisfy: true}},
		{"bytes=-0", want{ok: false, unsatisfy: true}}, // §14.1.1: a zero suffix is unsatisfiable
		// Valid numbers of any length (§14.1.2 sets no bound).
		{"bytes=" + huge + "-", want{ok: false, unsatisfy: true}},
		{"bytes=0-" + huge, want{0, 10, true, false}},
		{"bytes=-" + huge, want{0, 10, true, false}},
		{"bytes=" + huge + "-" + huge + "9", want{ok: false, unsatisfy: true}},
		// Invalid: ignored, so the whole file is sent.
		{"bytes=" + huge + "9-" + huge, want{}},
		{"bytes=5-2", want{}},
		{"bytes=-", want{}},
		{"bytes=+2-5", want{}},
		{"bytes=2-+5", want{}},
		{"bytes=0-1,4-5", want{}}, // several: not offered
		{"lines=1-2", want{}},
		{"bytes", want{}},
		{"", want{}},
	} {
		br, ok, unsat := parseRange([]byte(tt.h), size)
		if got := (want{br.off, br.n, ok, unsat}); got != tt.want {
			t.Errorf("parseRange(%q) = %+v, want %+v", tt.h, got, tt.want)
		}
	}
	if _, ok, unsat := parseRange([]byte("bytes=0-"), 0); ok || !unsat {
		t.Errorf("a range of an empty file: ok %v unsatisfiable %v, want unsatisfiable", ok, unsat)
	}
}

func TestETagListMatch(t *testing.T) {
	const etag = `"abc"`
	for _, tt := range []struct {
		list         string
		strong, weak bool // matches under strong and under weak comparison
	}{
		{`"abc"`, true, true},
		{`W/"abc"`, false, true},
		{`*`, true, true},
		{` * `, true, true},
		{`"x", "abc"`, true, true},
		{`"x" ,W/"abc",`, false, true},
		{`, ,"abc"`, true, true},
		{`"x"`, false, false},
		{``, false, false},
		// Malformed lists match nothing, whatever tags they hold.
		{`"x""abc"`, false, false},
		{`"abc" junk`, false, false},
		{`"abc", junk`, false, false},
		{`"a bc", "abc"`, false, false},
		{`"abc`, false, false},
		{`abc`, false, false},
		{`*, "abc"`, false, false},
		{`*0`, false, false},
		{`w/"abc"`, false, false},
	} {
		if got := etagListMatch([]byte(tt.list), etag, true); got != tt.strong {
			t.Errorf("strong: %q matches %v, want %v", tt.list, got, tt.strong)
		}
		if got := etagListMatch([]byte(tt.list), etag, false); got != tt.weak {
			t.Errorf("weak: %q matches %v, want %v", tt.list, got, tt.weak)
		}
	}
}
