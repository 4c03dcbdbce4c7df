package rdma

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// A fake sysfs class directory and /dev/infiniband: the kernel's devices,
// their uverbs nodes, and which nodes this /dev has.
func TestExplainNoDevice(t *testing.T) {
	type uverbs struct {
		node, ibdev string
		inDev       bool
	}
	for _, tt := range []struct {
		name   string
		kernel []string
		nodes  []uverbs
		want   string // in the error; "" for no explanation
		node   string
	}{
		{"no device in the kernel either", nil, nil, "", ""},
		{"a device this process can open: something else is wrong", []string{"siw0"},
			[]uverbs{{"uverbs0", "siw0", true}}, "", ""},
		{"the devices are not in this /dev (a container, PrivateDevices=)", []string{"rxe0", "siw0"},
			[]uverbs{{"uverbs0", "siw0", false}, {"uverbs1", "rxe0", false}},
			"the kernel has rxe0, siw0, but DEV/uverbs0: no such file or directory", "uverbs0"},
		{"one of two in this /dev: not why", []string{"rxe0", "siw0"},
			[]uverbs{{"uverbs0", "siw0", false}, {"uverbs1", "rxe0", true}}, "", ""},
		{"no ib_uverbs", []string{"mlx5_0"}, nil, "the kernel has mlx5_0 but no uverbs device for it", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			class, dev := t.TempDir(), t.TempDir()
			for _, k := range tt.kernel {
				mkdir(t, filepath.Join(class, "infiniband", k))
			}
			mkdir(t, filepath.Join(class, "infiniband_verbs"))
			os.WriteFile(filepath.Join(class, "infiniband_verbs", "abi_version"), []byte("6\n"), 0o644)
			for _, n := range tt.nodes {
				mkdir(t, filepath.Join(class, "infiniband_verbs", n.node))
				os.WriteFile(filepath.Join(class, "infiniband_verbs", n.node, "ibdev"), []byte(n.ibdev+"\n"), 0o644)
				if n.inDev {
					os.WriteFile(filepath.Join(dev, n.node), nil, 0o666)
				}
			}
			e := explainNoDevice(class, dev)
			if tt.want == "" {
				if e != nil {
					t.Fatalf("explained: %v", e)
				}
				return
			}
			if e == nil {
				t.Fatal("no explanation")
			}
			msg := strings.ReplaceAll(e.Error(), dev, "DEV")
			if !strings.Contains(msg, tt.want) || !errors.Is(e, ErrNoDevice) {
				t.Errorf("%s\nwant it to say %q and to be ErrNoDevice", msg, tt.want)
			}
			if tt.node != "" && (e.Node != filepath.Join(dev, tt.node) || !errors.Is(e, syscall.ENOENT)) {
				t.Errorf("Node %q, Err %v; want %s, ENOENT", e.Node, e.Err, tt.node)
			}
		})
	}
	// The exported one passes err through where it has nothing to add:
	// here, a host without RDMA, or one whose devices this test can open.
	if err := ExplainNoDevice(ErrNoDevice); err != ErrNoDevice && !errors.As(err, new(*NoDeviceError)) {
		t.Errorf("ExplainNoDevice(ErrNoDevice) = %v", err)
	}
}

func mkdir(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
}
