package stages

import "testing"

func TestEqualFoldASCII(t *testing.T) {
	tests := []struct {
		a, b string
		want bool
	}{
		{"Content-Length", "content-length", true},
		{"CONNECTION", "connection", true},
		{"close", "close ", false},
		{"", "", true},
		// ASCII only: no Unicode folding, so the Kelvin sign is not "k".
		{"\u212a", "k", false},
		{"[", "{", false}, // 0x5B and 0x7B differ by 0x20 but are not letters
	}
	for _, tt := range tests {
		if got := EqualFoldASCII(tt.a, tt.b); got != tt.want {
			t.Errorf("EqualFoldASCII(%q, %q) = %v", tt.a, tt.b, got)
		}
		if got := EqualFoldASCII([]byte(tt.a), tt.b); got != tt.want {
			t.Errorf("EqualFoldASCII([]byte(%q), %q) = %v", tt.a, tt.b, got)
		}
	}
}

func TestTrimOWS(t *testing.T) {
	tests := []struct{ in, want string }{
		{" \tv \t", "v"},
		{"a b", "a b"},
		{"", ""},
		{" \t ", ""},
		// OWS is SP and HTAB only (RFC 9110 §5.6.3).
		{"close\u00a0", "close\u00a0"},
		{"\r\nv\n", "\r\nv\n"},
		{"\vv\f", "\vv\f"},
	}
	for _, tt := range tests {
		if got := TrimOWS(tt.in); got != tt.want {
			t.Errorf("TrimOWS(%q) = %q, want %q", tt.in, got, tt.want)
		}
		if got := TrimOWS([]byte(tt.in)); string(got) != tt.want {
			t.Errorf("TrimOWS([]byte(%q)) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestListHasToken(t *testing.T) {
	tests := []struct {
		list, token string
		want        bool
	}{
		{"close", "close", true},
		{"Keep-Alive, Close", "close", true},
		{" upgrade ,\tclose ", "close", true},
		{"a,,close,", "close", true}, // empty members are allowed
		{"closed", "close", false},
		{"close-ish, x", "close", false},
		{"", "close", false},
		{",", "close", false},
		{"close\u00a0", "close", false}, // NBSP is not OWS
		{"clo se", "close", false},
		{"foo 100-continue", "100-continue", false}, // a member, not a word
	}
	for _, tt := range tests {
		if got := ListHasToken(tt.list, tt.token); got != tt.want {
			t.Errorf("ListHasToken(%q, %q) = %v", tt.list, tt.token, got)
		}
		if got := ListHasToken([]byte(tt.list), tt.token); got != tt.want {
			t.Errorf("ListHasToken([]byte(%q), %q) = %v", tt.list, tt.token, got)
		}
	}
}

func TestUnhex(t *testing.T) {
	for c := 0; c < 256; c++ {
		v, ok := Unhex(byte(c))
		var want byte
		wantOK := true
		switch {
		case '0' <= c && c <= '9':
			want = byte(c - '0')
		case 'a' <= c && c <= 'f':
			want = byte(c-'a') + 10
		case 'A' <= c && c <= 'F':
			want = byte(c-'A') + 10
		default:
			wantOK = false
		}
		if v != want || ok != wantOK {
			t.Errorf("Unhex(%q) = %d, %v; want %d, %v", byte(c), v, ok, want, wantOK)
		}
	}
}

// The helpers run on every request: they must not allocate.
func TestSyntaxHelpersDoNotAllocate(t *testing.T) {
	b := []byte(" keep-alive, Upgrade ")
	if n := testing.AllocsPerRun(100, func() {
		if !ListHasToken(b, "upgrade") || !EqualFoldASCII(TrimOWS(b)[:10], "KEEP-ALIVE") {
			t.Fatal("wrong answer")
		}
	}); n != 0 {
		t.Fatalf("%v allocations per run", n)
	}
}
