package stages

import "testing"

func TestKeepAlive(t *testing.T) {
	h := func(kv ...string) []Header {
		var hs []Header
		for i := 0; i < len(kv); i += 2 {
			hs = append(hs, Header{Name: []byte(kv[i]), Value: []byte(kv[i+1])})
		}
		return hs
	}
	tests := []struct {
		name    string
		minor   int
		close   bool
		headers []Header
		want    bool
	}{
		{"1.1 default", 1, false, nil, true},
		{"1.1 parser saw close", 1, true, nil, false},
		{"1.1 close in a second field", 1, false, h("Connection", "upgrade", "connection", "Close"), false},
		{"1.1 close with NBSP is not close", 1, false, h("Connection", "close\u00a0"), true},
		{"1.2 default, as 1.1", 2, false, nil, true},
		{"1.9 close, as 1.1", 9, false, h("Connection", "close"), false},
		{"1.0 default", 0, false, nil, false},
		{"1.0 keep-alive", 0, false, h("Connection", " Keep-Alive\t"), true},
		{"1.0 keep-alive in a list", 0, false, h("Connection", "foo, keep-alive"), true},
	}
	for _, tt := range tests {
		r := &Request{Minor: tt.minor, Close: tt.close, Headers: tt.headers}
		if got := r.KeepAlive(); got != tt.want {
			t.Errorf("%s: KeepAlive %v, want %v", tt.name, got, tt.want)
		}
	}
}
