//go:build verbs

package rdmatool

import (
	"github.com/quartet-server/quartet/rdma"
	"github.com/quartet-server/quartet/rdma/verbs"
)

// verbsProviders is the rdma-core provider: this binary was built with the
// verbs tag.
func verbsProviders() []rdma.Provider { return []rdma.Provider{verbs.New()} }
