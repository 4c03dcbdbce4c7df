// Package rdmatest picks the RDMA provider and address that tests run
// on. By default they run on the software provider over loopback; the
// VM tier (vm/ci.sh) runs the same test binaries, built with -tags
// verbs, on the kernel's siw0 and rxe0 by naming a provider and the
// device's IP:
//
//	QUARTET_RDMA_TEST_PROVIDER=verbs QUARTET_RDMA_TEST_ADDR=10.77.1.1 ./msgrdma.test
package rdmatest

import (
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/quartet-server/quartet/rdma"
	"github.com/quartet-server/quartet/rdma/rdmatool"
)

// The environment variables that choose the provider and the address.
const (
	EnvProvider = "QUARTET_RDMA_TEST_PROVIDER"
	EnvAddr     = "QUARTET_RDMA_TEST_ADDR"
)

// Provider is the provider EnvProvider names ("soft" when unset); a name
// this binary was not built with fails the test.
func Provider(t testing.TB) rdma.Provider {
	t.Helper()
	name := os.Getenv(EnvProvider)
	if name == "" {
		name = "soft"
	}
	p, err := rdmatool.NewRegistry().Get(name)
	if err != nil {
		t.Fatalf("%s=%s: %v", EnvProvider, name, err)
	}
	return p
}

// Host is the IP servers listen on and clients announce: EnvAddr, or
// 127.0.0.1.
func Host() string {
	if a := os.Getenv(EnvAddr); a != "" {
		return a
	}
	return "127.0.0.1"
}

// Addr is Host as an address.
func Addr() netip.Addr { return netip.MustParseAddr(Host()) }

// OnDevice reports whether the tests run on a device of the kernel's
// (EnvProvider names one other than soft), whose timing the software
// provider's does not share.
func OnDevice() bool {
	p := os.Getenv(EnvProvider)
	return p != "" && p != "soft"
}

// Eventually polls f until it holds or d has passed, and reports whether
// it held: for counters an RDMA peer or a completion updates a moment
// after the call a test made returned. Bound d generously; a test that
// needs all of it has failed anyway.
func Eventually(d time.Duration, f func() bool) bool {
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if f() {
			return true
		}
		time.Sleep(5 * time.Millisecond)
	}
	return f()
}
