package static

import (
	"strings"
	"testing"
)

func TestCleanPath(t *testing.T) {
	for _, tt := range []struct {
		raw  string
		name string
		dir  bool
		bad  bool
	}{
		{raw: "/", name: ".", dir: true},
		{raw: "/a", name: "a"},
		{raw: "/a/", name: "a", dir: true},
		{raw: "//a//b/", name: "a/b", dir: true},
		{raw: "/a/./b", name: "a/b"},
		{raw: "/%61%2Fb", bad: true},
		{raw: "/%61/b", name: "a/b"},
		{raw: "/sp%20ace", name: "sp ace"},
		{raw: "/%25", name: "%"},
		{raw: "/%252e%252e", name: "%2e%2e"},
		{raw: "/..", bad: true},
		{raw: "/a/..", bad: true},
		{raw: "/a/../b", bad: true},
		{raw: "/%2e%2e/x", bad: true},
		{raw: "/.%2E/x", bad: true},
		{raw: "/a%2fb", bad: true},
		{raw: "/a%5cb", bad: true},
		{raw: "/a%00b", bad: true},
		{raw: "/a\x00b", bad: true},
		{raw: "/%", bad: true},
		{raw: "/%4", bad: true},
		{raw: "/%g0", bad: true},
		{raw: "", bad: true},
		{raw: "a", bad: true},
		{raw: "*", bad: true},
		{raw: "http://h/a", bad: true},
	} {
		name, dir, err := cleanPath([]byte(tt.raw))
		if tt.bad {
			if err == nil {
				t.Errorf("cleanPath(%q) = %q, %v; want an error", tt.raw, name, dir)
			}
			continue
		}
		if err != nil || name != tt.name || dir != tt.dir {
			t.Errorf("cleanPath(%q) = %q, %v, %v; want %q, %v", tt.raw, name, dir, err, tt.name, tt.dir)
		}
	}
}

// Whatever the request path, an accepted name stays under the root: no
// ".." or empty element, no leading or trailing slash, no NUL. (Names need
// not be UTF-8: Linux file names are bytes.)
func FuzzCleanPath(f *testing.F) {
	for _, s := range []string{"/", "/a/b/", "/../x", "/%2e%2e/x", "/a%2fb", "/a%00", "//x", "/a/./../b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		name, _, err := cleanPath([]byte(raw))
		if err != nil {
			return
		}
		if name == "." {
			return
		}
		for _, el := range strings.Split(name, "/") {
			if el == "" || el == "." || el == ".." || strings.Contains(el, "\x00") {
				t.Fatalf("cleanPath(%q) = %q: element %q", raw, name, el)
			}
		}
	})
}

// cleanKey accepts only paths that cleanPath accepts, and gives the key
// that cleanPath's name and dir make.
func TestCleanKey(t *testing.T) {
	for _, raw := range []string{
		"/", "/a", "/a/", "/a/b", "/a/b/", "//a", "/a//", "/a//b", "/.", "/..", "/./a", "/a/.", "/a/..",
		"/a/./b", "/.a", "/..a", "/a./", "/a../b", "/.../", "/%61", "/a\x00", "a", "", "/a\\b", "/sp ace/",
	} {
		checkCleanKey(t, raw)
	}
	for _, raw := range []string{"/a", "/a/", "/a/b", "/.a", "/..a", "/a./", "/a\\b", "/sp ace/"} {
		if _, ok := cleanKey([]byte(raw)); !ok {
			t.Errorf("cleanKey(%q) refused a clean path", raw)
		}
	}
}

func FuzzCleanKey(f *testing.F) {
	for _, s := range []string{"/", "/a/b/", "/../x", "//x", "/a/./../b", "/.a/"} {
		f.Add(s)
	}
	f.Fuzz(checkCleanKey)
}

func checkCleanKey(t *testing.T, raw string) {
	key, ok := cleanKey([]byte(raw))
	name, dir, err := cleanPath([]byte(raw))
	if !ok {
		return
	}
	want := name
	if dir {
		want += "/"
	}
	if err != nil || string(key) != want {
		t.Errorf("cleanKey(%q) = %q; cleanPath gives %q, %v, %v", raw, key, name, dir, err)
	}
}
