package rdmatool

import (
	"github.com/quartet-server/quartet/rdma"
	"github.com/quartet-server/quartet/rdma/soft"
)

// NewRegistry lists the providers this binary has, hardware first so that
// "auto" picks verbs when a device exists and software iWARP otherwise.
func NewRegistry() *rdma.Registry {
	ps := append(verbsProviders(), rdma.Provider(soft.New(soft.Config{})))
	return rdma.NewRegistry(ps...)
}
