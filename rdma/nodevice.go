package rdma

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// NoDeviceError is ErrNoDevice from a provider of the kernel's RDMA stack
// (verbs) on a host whose kernel has RDMA devices that this process cannot
// use: their character devices (/dev/infiniband/uverbsN) are not in its
// /dev (a container started without --device, a systemd service with
// PrivateDevices=yes) or not open to it, or the kernel has no uverbs
// devices for them (the ib_uverbs module not loaded). libibverbs skips
// such devices without a word, so the provider would only say it found
// none while `rdma link` and /sys list them.
type NoDeviceError struct {
	Kernel []string // the kernel's RDMA devices (/sys/class/infiniband)
	// Node is the first of their character devices that cannot be
	// opened, "" when the kernel has none for them (no ib_uverbs).
	Node string
	Err  error // why Node cannot be opened (ENOENT, EACCES)
}

func (e *NoDeviceError) Error() string {
	devs := strings.Join(e.Kernel, ", ")
	if e.Node == "" {
		return fmt.Sprintf("rdma: no RDMA device: the kernel has %s but no uverbs device for it (/sys/class/infiniband_verbs is empty): load the ib_uverbs module", devs)
	}
	return fmt.Sprintf("rdma: no RDMA device: the kernel has %s, but %s: %v: run where /dev/infiniband is present and open to this user (a container needs --device /dev/infiniband/...; a systemd service PrivateDevices=no)",
		devs, e.Node, e.Err)
}

func (e *NoDeviceError) Is(target error) bool { return target == ErrNoDevice }

func (e *NoDeviceError) Unwrap() error { return e.Err }

// ExplainNoDevice returns err, a provider's finding no device, as a
// *NoDeviceError when the kernel has RDMA devices none of which this
// process can open; otherwise (no device in the kernel either, or one it
// can open, so that something else is wrong) err as it was. It looks on
// the calling thread, whose mount namespace is the one the provider's
// calls see.
func ExplainNoDevice(err error) error {
	if e := explainNoDevice("/sys/class", "/dev/infiniband"); e != nil {
		return e
	}
	return err
}

// explainNoDevice is ExplainNoDevice over the given sysfs class directory
// and device directory.
func explainNoDevice(class, dev string) *NoDeviceError {
	kernel := entries(filepath.Join(class, "infiniband"))
	if len(kernel) == 0 {
		return nil
	}
	e := &NoDeviceError{Kernel: kernel}
	nodes := entries(filepath.Join(class, "infiniband_verbs"))
	for _, n := range nodes {
		// The ABI version file is there, not a device.
		if !strings.HasPrefix(n, "uverbs") {
			continue
		}
		ibdev, err := os.ReadFile(filepath.Join(class, "infiniband_verbs", n, "ibdev"))
		if err != nil || !slices.Contains(kernel, strings.TrimSpace(string(ibdev))) {
			continue
		}
		path := filepath.Join(dev, n)
		err = unix.Access(path, unix.R_OK|unix.W_OK)
		if err == nil {
			return nil // one the process can open: not why
		}
		if e.Node == "" {
			e.Node, e.Err = path, err
		}
	}
	return e
}

// entries lists dir's names, sorted; none if it cannot be read.
func entries(dir string) []string {
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var names []string
	for _, d := range des {
		names = append(names, d.Name())
	}
	return names
}
