package reader

import "testing"

// A stash keeps at most max items and gives back, at each decay, what sat
// unused through the whole interval since the last one.
func TestStash(t *testing.T) {
	type step struct {
		op   string // get, put, decay
		want int    // items kept after the step
	}
	for _, tc := range []struct {
		name  string
		max   int
		steps []step
	}{
		{"bounded", 2, []step{{"put", 1}, {"put", 2}, {"put", 2}}},
		{"a burst decays within two intervals", 8, []step{
			{"put", 1}, {"put", 2}, {"put", 3}, {"put", 4},
			{"decay", 4}, // the items were not there all interval: nothing was unused from its start
			{"decay", 0}, // unused through a whole interval: given back
		}},
		{"steady use keeps what it uses", 8, []step{
			{"put", 1}, {"put", 2}, {"put", 3}, {"decay", 3},
			{"get", 2}, {"put", 3}, {"decay", 1}, // one was taken and returned; two sat idle all interval
			{"get", 0}, {"put", 1}, {"decay", 1},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := stash[[]byte]{max: tc.max}
			for i, st := range tc.steps {
				switch st.op {
				case "put":
					s.put(make([]byte, 1))
				case "get":
					if _, ok := s.get(); !ok {
						t.Fatalf("step %d: get from an empty stash", i)
					}
				case "decay":
					s.decay()
				}
				if s.len() != st.want {
					t.Fatalf("step %d (%s): %d items, want %d", i, st.op, s.len(), st.want)
				}
			}
		})
	}
}
