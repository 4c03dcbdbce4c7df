package reader

import "time"

// stash keeps up to max reusable things (buffers, connection records) for
// the loop, so that connection churn does not allocate, and gives back
// what it does not need: decay, called once per decayInterval, drops the
// items that sat unused through the whole interval (the fewest the stash
// held at any point of it), oldest first. After a burst the memory goes
// back within two intervals; under steady churn nothing is dropped.
//
// It is the loop's alone, like everything the loop owns.
type stash[T any] struct {
	items []T
	low   int // fewest items held since the last decay
	max   int
}

// decayInterval is how long an item may sit unused in a stash before it is
// given back.
const decayInterval = 2 * time.Second

func (s *stash[T]) get() (T, bool) {
	n := len(s.items)
	if n == 0 {
		var zero T
		return zero, false
	}
	x := s.items[n-1]
	var zero T
	s.items[n-1] = zero
	s.items = s.items[:n-1]
	s.low = min(s.low, n-1)
	return x, true
}

// put keeps x and reports true, or reports false when the stash is full.
func (s *stash[T]) put(x T) bool {
	if len(s.items) >= s.max {
		return false
	}
	s.items = append(s.items, x)
	return true
}

// decay drops the items unused since the last call.
func (s *stash[T]) decay() {
	drop := s.low
	if drop > 0 {
		n := copy(s.items, s.items[drop:])
		clear(s.items[n:])
		s.items = s.items[:n]
		if cap(s.items) > 4*max(n, 8) {
			s.items = append([]T(nil), s.items...) // the array itself is memory too
		}
	}
	s.low = len(s.items)
}

// len is the number of items kept.
func (s *stash[T]) len() int { return len(s.items) }
