//go:build !linux

package listener

import (
	"errors"
	"sync/atomic"
	"testing"

	"github.com/quartet-server/quartet/stages"
)

// Without Linux, New fails with an error that says so.
func TestNewUnsupported(t *testing.T) {
	var ids atomic.Uint64
	l, err := New(Config{Addr: "127.0.0.1:0", Assign: func(*stages.Conn) {}}, &ids)
	if l != nil || !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("New: %v, %v; want errors.ErrUnsupported", l, err)
	}
}
