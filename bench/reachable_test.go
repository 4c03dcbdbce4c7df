package bench

import (
	"bytes"
	"context"
	"net"
	"strings"
	"testing"
	"time"
)

// An unreachable target fails at once with one line, not a report of
// connect errors.
func TestUnreachableTargetIsOneClearError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	var stdout, stderr bytes.Buffer
	err = Main(context.Background(), []string{"-d", "1s", "http://" + addr + "/hello"}, Env{Stdout: &stdout, Stderr: &stderr})
	if err == nil || !strings.Contains(err.Error(), "cannot connect to "+addr+": connect: connection refused") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("error %q", err)
	}
	if stdout.Len() > 0 || stderr.Len() > 0 {
		t.Fatalf("printed besides the error: %q %q", stdout.String(), stderr.String())
	}
}

// The reachability check takes the run's request timeout, and "negative:
// none" must not turn into a connect that has expired before it starts.
func TestReachableTimeouts(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	url := "http://" + ln.Addr().String() + "/hello"
	for _, timeout := range []time.Duration{-time.Second, -time.Nanosecond, time.Second, DefaultTimeout} {
		if err := checkReachable(context.Background(), url, timeout); err != nil {
			t.Errorf("timeout %v: %v", timeout, err)
		}
	}
}
