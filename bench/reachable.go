package bench

import (
	"context"
	"fmt"
	"net"
	"time"
)

// checkReachable connects to the target once before a run, so that a
// server that is not there is one clear error instead of a report of
// nothing but connect errors.
func checkReachable(ctx context.Context, rawURL string, timeout time.Duration) error {
	t, err := parseRunTarget(rawURL)
	if err != nil {
		return err
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
