//go:build !verbs

package rdmatool

import "github.com/quartet-server/quartet/rdma"

// verbsProviders is empty: without the verbs tag the binary has no cgo
// provider (build with -tags verbs for rdma-core devices).
func verbsProviders() []rdma.Provider { return nil }
