//go:build !linux

package poll

import (
	"errors"
	"runtime"
	"strings"
	"testing"
)

// Without a backend, New says so, naming the platform.
func TestNewUnsupported(t *testing.T) {
	for _, open := range []func() (*Poller, error){New, NewBlocking} {
		p, err := open()
		if p != nil || !errors.Is(err, errors.ErrUnsupported) || !strings.Contains(err.Error(), runtime.GOOS) {
			t.Errorf("got %v, %v; want ErrUnsupported naming %s", p, err, runtime.GOOS)
		}
	}
}
