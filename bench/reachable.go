package bench

import (
	"context"
	"fmt"
	"net"
	"time"
)

// reachableDialBound bounds the reachability check's connect when the
// run has no request timeout.
const reachableDialBound = 10 * time.Second

// checkReachable connects to the target once before a run, so that a
// server that is not there is one clear error instead of a report of
// nothing but connect errors.
func checkReachable(ctx context.Context, rawURL string, timeout time.Duration) error {
	t, err := parseRunTarget(rawURL)
	if err != nil {
		return err
	}
	// A negative request timeout means "wait for the answers as long as
	// it takes", not "give up connecting at once" (a negative Dialer
	// timeout has already expired); the check still needs a bound of its
	// own so that a black-holed address fails instead of hanging.
	if timeout <= 0 {
		timeout = reachableDialBound
	}
	d := net.Dialer{Timeout: timeout}
	c, err := d.DialContext(ctx, "tcp", t.addr.String())
	if err != nil {
		if op, ok := err.(*net.OpError); ok {
			err = op.Err // "connect: connection refused", without Go's "dial tcp ..."
		}
		return fmt.Errorf("bench: %s: cannot connect to %s: %v", rawURL, t.addr, err)
	}
	c.Close()
	return nil
}
