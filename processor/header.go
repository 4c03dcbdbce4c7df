package processor

import (
	"unsafe"

	"github.com/quartet-server/quartet/stages"
)

// Header is a response's header set. It is append-only storage, so that it
// allocates nothing once a worker has served a few requests: Add appends a
// field, Del marks fields dead instead of moving the others, Set is Del then
// Add, and the arrays are reused for the worker's next request.
//
// Add stores the strings it is given (strings are immutable, so no copy is
// needed); AddBytes copies its arguments into the header's own arena, so the
// caller may reuse its slices at once.
//
// Lifetime: a Header belongs to one request. Strings returned by Get and
// Visit, and any value added with AddBytes, are valid only until the handler
// returns: the arena they point into is reused for the next request.
//
// Changing a Header after WriteHeader (or the first Write) has no effect, as
// in net/http: the header block is built from what was set at that moment.
type Header struct {
	fields []headerField
	arena  []byte
	frozen bool
}

type headerField struct {
	name, value string
	dead        bool
}

// Add appends a field. Names are matched case-insensitively by Get, Set and
// Del, and written as given.
func (h *Header) Add(name, value string) {
	if h.frozen {
		return
	}
	h.fields = append(h.fields, headerField{name: name, value: value})
}

// AddBytes is Add for byte slices; it copies them.
func (h *Header) AddBytes(name, value []byte) {
	if h.frozen {
		return
	}
	h.fields = append(h.fields, headerField{name: h.keep(name), value: h.keep(value)})
}

// Set replaces every field named name with one field.
func (h *Header) Set(name, value string) {
	h.Del(name)
	h.Add(name, value)
}

// SetBytes is Set for byte slices; it copies them.
func (h *Header) SetBytes(name, value []byte) {
	if h.frozen {
		return
	}
	n := h.keep(name)
	h.Del(n)
	h.fields = append(h.fields, headerField{name: n, value: h.keep(value)})
}

// Del removes every field named name.
func (h *Header) Del(name string) {
	if h.frozen {
		return
	}
	for i := range h.fields {
		if !h.fields[i].dead && stages.EqualFoldASCII(h.fields[i].name, name) {
			h.fields[i].dead = true
		}
	}
}

// Get returns the value of the first field named name, or "".
func (h *Header) Get(name string) string {
	v, _ := h.lookup(name)
	return v
}

// Has reports whether a field named name is set.
func (h *Header) Has(name string) bool {
	_, ok := h.lookup(name)
	return ok
}

// Visit calls fn for each field in the order added, until fn returns false.
func (h *Header) Visit(fn func(name, value string) bool) {
	for i := range h.fields {
		if !h.fields[i].dead && !fn(h.fields[i].name, h.fields[i].value) {
			return
		}
	}
}

func (h *Header) lookup(name string) (string, bool) {
	for i := range h.fields {
		if !h.fields[i].dead && stages.EqualFoldASCII(h.fields[i].name, name) {
			return h.fields[i].value, true
		}
	}
	return "", false
}

// keep copies b into the arena and returns a string over the copy. The
// string aliases the arena on purpose: converting with string(b) would
// allocate per field. If the arena grows, strings made earlier keep the old
// array alive and stay valid; the arena is only overwritten after reset,
// when no field refers to it any more.
func (h *Header) keep(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	off := len(h.arena)
	h.arena = append(h.arena, b...)
	return unsafe.String(&h.arena[off], len(b))
}

// reset empties the header for the next request, keeping its arrays.
func (h *Header) reset() {
	clear(h.fields) // drop string references so old values can be collected
	h.fields = h.fields[:0]
	h.arena = h.arena[:0]
	h.frozen = false
}
