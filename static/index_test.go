package static

import (
	"fmt"
	"sync"
	"testing"
)

func TestIndex(t *testing.T) {
	if n := len(newIndex(1).buckets); n != 16 {
		t.Fatalf("%d buckets for a bound of 1, want 16", n)
	}
	if n := len(newIndex(1000).buckets); n != 2048 {
		t.Fatalf("%d buckets for a bound of 1000, want 2048", n)
	}
	// 40 names in 16 buckets: chains of several, so that replacing or
	// removing one must keep its neighbours. An entry's name is its
	// version here.
	x := newIndex(1)
	want := map[string]string{}
	for i := range 40 {
		k := fmt.Sprintf("/f%d", i)
		x.set(&entry{key: k, name: "v1"})
		want[k] = "v1"
	}
	for _, step := range []struct {
		name   string
		change func()
		now    map[string]string // names whose version changes ("": gone)
	}{
		{"all set", func() {}, nil},
		{"one replaced", func() { x.set(&entry{key: "/f3", name: "v2"}) }, map[string]string{"/f3": "v2"}},
		{"one removed, and one never set", func() { x.remove("/f7"); x.remove("/absent") }, map[string]string{"/f7": ""}},
		{"a removed one set again", func() { x.set(&entry{key: "/f7", name: "v3"}) }, map[string]string{"/f7": "v3"}},
	} {
		step.change()
		for k, v := range step.now {
			want[k] = v
		}
		for k, v := range want {
			got := ""
			if e := x.find([]byte(k)); e != nil {
				if e.key != k {
					t.Fatalf("%s: find(%s) gave %s's entry", step.name, k, e.key)
				}
				got = e.name
			}
			if e := x.findString(k); (e == nil) != (got == "") || e != nil && e.name != got {
				t.Errorf("%s: findString(%s) disagrees with find", step.name, k)
			}
			if got != v {
				t.Errorf("%s: find(%s) = version %q, want %q", step.name, k, got, v)
			}
		}
	}
	if e := x.find([]byte("/absent")); e != nil {
		t.Errorf("find of a name never set: %+v", e)
	}
	key := []byte("/f1")
	if n := testing.AllocsPerRun(100, func() { x.find(key) }); n != 0 {
		t.Errorf("find allocates %v times", n)
	}
	x.clear()
	for k := range want {
		if e := x.find([]byte(k)); e != nil {
			t.Fatalf("find(%s) after clear: %+v", k, e)
		}
	}
}

// Readers find while a writer replaces and removes (the race detector
// watches): a reader sees a name's entry, old or new, or none while it is
// removed, never another name's.
func TestIndexConcurrent(t *testing.T) {
	x := newIndex(4)
	names := []string{"/a", "/b", "/c", "/d", "/e", "/f"}
	for _, k := range names {
		x.set(&entry{key: k})
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for r := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				k := names[(i+r)%len(names)]
				if e := x.find([]byte(k)); e != nil && e.key != k {
					t.Errorf("find(%s) gave %s's entry", k, e.key)
					return
				}
			}
		}()
	}
	var mu sync.Mutex // the cache's: writers are serialised
	for i := range 20000 {
		k := names[i%len(names)]
		mu.Lock()
		if i%3 == 0 {
			x.remove(k)
		} else {
			x.set(&entry{key: k})
		}
		mu.Unlock()
	}
	close(stop)
	wg.Wait()
}
