package stages

import (
	"net/url"
	"testing"
)

func TestQueryValue(t *testing.T) {
	tests := []struct {
		query, key string
		raw        string
		decoded    string
		ok         bool
	}{
		{"ms=250", "ms", "250", "250", true},
		{"a=1&ms=250&ms=9", "ms", "250", "250", true},
		{"msx=1&ms=2", "ms", "2", "2", true},
		{"a&b=", "a", "", "", true},
		{"a&b=", "b", "", "", true},
		{"a=1", "b", "", "", false},
		{"", "a", "", "", false},
		{"q=hello+w%C3%B6rld%21", "q", "hello+w%C3%B6rld%21", "hello wörld!", true},
		{"na%6De=x", "name", "x", "x", true},
		{"my+key=v", "my key", "v", "v", true},
		{"bad=%zz%4", "bad", "%zz%4", "%zz%4", true},
		{"a&&=x&", "", "x", "x", true}, // an empty pair is no pair, not a key ""
		{"a&&", "", "", "", false},
	}
	for _, tt := range tests {
		r := &Request{Query: []byte(tt.query)}
		raw, ok := r.QueryValue(tt.key)
		if ok != tt.ok || string(raw) != tt.raw {
			t.Errorf("%q: QueryValue(%q) = %q, %v; want %q, %v", tt.query, tt.key, raw, ok, tt.raw, tt.ok)
		}
		dec, ok := r.AppendQueryValue(nil, tt.key)
		if ok != tt.ok || string(dec) != tt.decoded {
			t.Errorf("%q: AppendQueryValue(%q) = %q, %v; want %q", tt.query, tt.key, dec, ok, tt.decoded)
		}
		// Where net/url can parse the query, it agrees.
		if vs, err := url.ParseQuery(tt.query); err == nil && tt.ok {
			if got := vs.Get(tt.key); got != tt.decoded {
				t.Errorf("%q: net/url says %q, we say %q", tt.query, got, tt.decoded)
			}
		}
	}
}

func TestQueryInt(t *testing.T) {
	for q, want := range map[string]int64{"n=0": 0, "n=123456": 123456, "n=999999999999999999": 999999999999999999} {
		if n, ok := (&Request{Query: []byte(q)}).QueryInt("n"); !ok || n != want {
			t.Errorf("%q: %d %v", q, n, ok)
		}
	}
	for _, q := range []string{"n=", "n=-1", "n=1e3", "n=1234567890123456789", "m=1"} {
		if n, ok := (&Request{Query: []byte(q)}).QueryInt("n"); ok {
			t.Errorf("%q: %d accepted", q, n)
		}
	}
}

// The query helpers exist so that a handler need not allocate to read a
// parameter (url.ParseQuery builds a map): they must not allocate.
func TestQueryHelpersDoNotAllocate(t *testing.T) {
	r := &Request{Query: []byte("utm_source=x&page=2&q=hello+w%C3%B6rld&ms=250")}
	buf := make([]byte, 0, 64)
	if n := testing.AllocsPerRun(100, func() {
		v, ok := r.QueryValue("ms")
		buf, _ = r.AppendQueryValue(buf[:0], "q")
		page, _ := r.QueryInt("page")
		if !ok || string(v) != "250" || string(buf) != "hello wörld" || page != 2 {
			t.Fatal("wrong answer")
		}
	}); n != 0 {
		t.Fatalf("%v allocations per run", n)
	}
}

func BenchmarkQueryValue(b *testing.B) {
	r := &Request{Query: []byte("utm_source=x&utm_medium=y&page=2&q=hello+w%C3%B6rld&ms=250")}
	buf := make([]byte, 0, 64)
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := r.QueryValue("ms"); !ok {
			b.Fatal("ms")
		}
		if buf, _ = r.AppendQueryValue(buf[:0], "q"); len(buf) == 0 {
			b.Fatal("q")
		}
		if n, _ := r.QueryInt("page"); n != 2 {
			b.Fatal("page")
		}
	}
}

func BenchmarkNetURLParseQuery(b *testing.B) {
	q := "utm_source=x&utm_medium=y&page=2&q=hello+w%C3%B6rld&ms=250"
	b.ReportAllocs()
	for b.Loop() {
		vs, _ := url.ParseQuery(q)
		if vs.Get("ms") == "" {
			b.Fatal("ms")
		}
	}
}

// FuzzQueryValue checks the query helpers against net/url: wherever
// url.ParseQuery accepts a query, the first value it finds for key is the
// one AppendQueryValue decodes, and a key it does not find is not found.
// (ParseQuery refuses a malformed escape and a semicolon; the helpers keep
// the escape as sent and take the semicolon as a byte of the pair.)
func FuzzQueryValue(f *testing.F) {
	for _, s := range [][2]string{
		{"ms=250", "ms"}, {"a=1&ms=250&ms=9", "ms"}, {"a&b=", "a"}, {"q=hello+w%C3%B6rld%21", "q"},
		{"na%6De=x", "name"}, {"my+key=v", "my key"}, {"a%3Db=c", "a=b"}, {"&&=x&", ""}, {"k=%zz", "k"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, query, key string) {
		r := &Request{Query: []byte(query)}
		raw, ok := r.QueryValue(key)
		dec, decOK := r.AppendQueryValue(nil, key)
		if ok != decOK {
			t.Fatalf("%q: QueryValue found %q: %v, AppendQueryValue: %v", query, key, ok, decOK)
		}
		if ok && len(dec) > len(raw) {
			t.Fatalf("%q: %q decoded to %q, longer than %q", query, key, dec, raw)
		}
		vs, err := url.ParseQuery(query)
		if err != nil {
			return
		}
		want, found := vs[key]
		if ok != found || ok && string(dec) != want[0] {
			t.Fatalf("%q, key %q: we say %q (found %v), net/url %q (found %v)", query, key, dec, ok, want, found)
		}
	})
}
