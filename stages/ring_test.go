package stages

import (
	"runtime"
	"sync"
	"testing"
)

func TestNewRingCapacity(t *testing.T) {
	for _, tc := range []struct{ in, want int }{
		{-1, 2}, {0, 2}, {1, 2}, {2, 2}, {3, 4}, {4, 4}, {5, 8}, {1000, 1024}, {1024, 1024}, {1025, 2048},
	} {
		if got := NewRing[int](tc.in).Cap(); got != tc.want {
			t.Errorf("NewRing(%d).Cap() = %d, want %d", tc.in, got, tc.want)
		}
	}
}

func TestRingSequential(t *testing.T) {
	// Each case is a script of pushes (>0: push that value) and pops (0),
	// run against a plain slice as the reference FIFO.
	for _, tc := range []struct {
		name   string
		cap    int
		script []int
	}{
		{"empty pop", 4, []int{0, 0}},
		{"fifo order", 4, []int{1, 2, 3, 0, 0, 0, 0}},
		{"full", 4, []int{1, 2, 3, 4, 5, 6, 0, 0, 0, 0, 0}},
		{"full then one free", 2, []int{1, 2, 3, 0, 4, 0, 0, 0}},
		{"wrap around many laps", 2, repeatScript([]int{7, 8, 0, 9, 0, 0}, 50)},
		{"interleaved wrap", 4, repeatScript([]int{1, 2, 3, 0, 0, 4, 5, 0, 6, 0, 0, 0}, 20)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := NewRing[int](tc.cap)
			var ref []int
			for step, op := range tc.script {
				if op > 0 {
					want := len(ref) < r.Cap()
					if got := r.Push(op); got != want {
						t.Fatalf("step %d: Push(%d) = %v, want %v (len %d cap %d)", step, op, got, want, len(ref), r.Cap())
					}
					if want {
						ref = append(ref, op)
					}
				} else {
					v, ok := r.Pop()
					if len(ref) == 0 {
						if ok {
							t.Fatalf("step %d: Pop() = %d, true on empty ring", step, v)
						}
						continue
					}
					if !ok || v != ref[0] {
						t.Fatalf("step %d: Pop() = %d, %v; want %d, true", step, v, ok, ref[0])
					}
					ref = ref[1:]
				}
				if r.Len() != len(ref) {
					t.Fatalf("step %d: Len() = %d, want %d", step, r.Len(), len(ref))
				}
			}
		})
	}
}

func repeatScript(s []int, n int) []int {
	var out []int
	for i := 0; i < n; i++ {
		out = append(out, s...)
	}
	return out
}

func TestRingPopClearsSlot(t *testing.T) {
	// The ring must not keep a popped pointer reachable: the handler's
	// request memory would live until the slot's next lap.
	r := NewRing[*int](2)
	x := new(int)
	r.Push(x)
	if v, ok := r.Pop(); !ok || v != x {
		t.Fatal("Pop did not return the pushed pointer")
	}
	for i := range r.slots {
		if r.slots[i].val != nil {
			t.Fatalf("slot %d still holds a pointer after Pop", i)
		}
	}
}

func TestRingMPMCStress(t *testing.T) {
	for _, tc := range []struct {
		name                 string
		cap, prod, cons, per int
	}{
		{"spsc tiny", 2, 1, 1, 20000},
		{"mpsc", 8, 4, 1, 5000},
		{"spmc", 8, 1, 4, 20000},
		{"mpmc", 16, 4, 4, 5000},
		{"mpmc cap2", 2, 3, 3, 3000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := NewRing[int](tc.cap)
			total := tc.prod * tc.per
			seen := make([]int32, total)
			var wg sync.WaitGroup
			var mu sync.Mutex
			popped := 0
			done := make(chan struct{})
			for p := 0; p < tc.prod; p++ {
				wg.Add(1)
				go func(p int) {
					defer wg.Done()
					for i := 0; i < tc.per; i++ {
						for !r.Push(p*tc.per + i) {
							runtime.Gosched()
						}
					}
				}(p)
			}
			var cwg sync.WaitGroup
			for c := 0; c < tc.cons; c++ {
				cwg.Add(1)
				go func() {
					defer cwg.Done()
					// Per-producer order must hold for each consumer.
					last := make([]int, tc.prod)
					for i := range last {
						last[i] = -1
					}
					for {
						v, ok := r.Pop()
						if !ok {
							select {
							case <-done:
								return
							default:
								runtime.Gosched()
								continue
							}
						}
						p, i := v/tc.per, v%tc.per
						if i <= last[p] {
							t.Errorf("producer %d: item %d after %d", p, i, last[p])
						}
						last[p] = i
						mu.Lock()
						seen[v]++
						popped++
						if popped == total {
							close(done)
						}
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			cwg.Wait()
			for v, n := range seen {
				if n != 1 {
					t.Fatalf("item %d delivered %d times", v, n)
				}
			}
			if r.Len() != 0 {
				t.Fatalf("Len() = %d after draining", r.Len())
			}
		})
	}
}
