package bench

// connHeap is a binary min-heap of open-loop connections ordered by their
// next intended send time. It is typed (not container/heap) so pushing and
// popping never box a value, and each conn records its index so a dropped
// connection can be removed in O(log n).
type connHeap []*conn

func (h *connHeap) push(c *conn) {
	c.heapIdx = len(*h)
	*h = append(*h, c)
	h.up(c.heapIdx)
}

func (h *connHeap) pop() *conn {
	old := *h
	c := old[0]
	last := len(old) - 1
	old.swap(0, last)
	*h = old[:last]
	h.down(0)
	c.heapIdx = -1
	return c
}

func (h *connHeap) remove(c *conn) {
	i := c.heapIdx
	old := *h
	last := len(old) - 1
	if i != last {
		old.swap(i, last)
	}
	*h = old[:last]
	if i != last {
		h.down(i)
		h.up(i)
	}
	c.heapIdx = -1
}

func (h connHeap) swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIdx = i
	h[j].heapIdx = j
}

func (h connHeap) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if h[p].due <= h[i].due {
			return
		}
		h.swap(i, p)
		i = p
	}
}

func (h connHeap) down(i int) {
	for {
		l := 2*i + 1
		if l >= len(h) {
			return
		}
		m := l
		if r := l + 1; r < len(h) && h[r].due < h[l].due {
			m = r
		}
		if h[i].due <= h[m].due {
			return
		}
		h.swap(i, m)
		i = m
	}
}
