package rdma_test

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/quartet-server/quartet/rdma"
)

func TestAllocAndMapFile(t *testing.T) {
	m, err := rdma.Alloc(5000)
	if err != nil {
		t.Fatal(err)
	}
	if m.Len() != 5000 || len(m.Bytes()) != 5000 {
		t.Fatalf("len %d", m.Len())
	}
	m.Bytes()[4999] = 1
	if err := m.Free(); err != nil {
		t.Fatal(err)
	}
	if err := m.Free(); err != nil {
		t.Fatal("second Free:", err)
	}
	if _, err := rdma.Alloc(0); !errors.Is(err, rdma.ErrInvalid) {
		t.Fatalf("Alloc(0): %v", err)
	}

	path := filepath.Join(t.TempDir(), "body")
	data := make([]byte, 3*os.Getpagesize()+100)
	for i := range data {
		data[i] = byte(i * 13)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, c := range []struct{ off, n int }{{0, len(data)}, {1, 10}, {os.Getpagesize() + 7, 2 * os.Getpagesize()}} {
		fm, err := rdma.MapFile(f, int64(c.off), c.n)
		if err != nil {
			t.Fatal(err)
		}
		if string(fm.Bytes()) != string(data[c.off:c.off+c.n]) {
			t.Errorf("MapFile(%d, %d): bytes differ", c.off, c.n)
		}
		if err := fm.Free(); err != nil {
			t.Fatal(err)
		}
	}
}

type fakeProvider struct {
	name string
	devs int
}

func (p fakeProvider) Name() string { return p.name }
func (p fakeProvider) Devices() ([]rdma.DeviceInfo, error) {
	return make([]rdma.DeviceInfo, p.devs), nil
}
func (p fakeProvider) Open(string) (rdma.Device, error)           { return nil, rdma.ErrNoDevice }
func (p fakeProvider) OpenByAddr(netip.Addr) (rdma.Device, error) { return nil, rdma.ErrNoDevice }

func TestRegistry(t *testing.T) {
	r := rdma.NewRegistry(fakeProvider{"verbs", 0}, fakeProvider{"soft", 1})
	for _, c := range []struct{ ask, want string }{{"auto", "soft"}, {"", "soft"}, {"verbs", "verbs"}, {"soft", "soft"}} {
		p, err := r.Get(c.ask)
		if err != nil || p.Name() != c.want {
			t.Errorf("Get(%q) = %v, %v; want %s", c.ask, p, err, c.want)
		}
	}
	if _, err := r.Get("nope"); !errors.Is(err, rdma.ErrUnknownProvider) {
		t.Errorf("Get(nope): %v", err)
	}
	if _, err := rdma.NewRegistry(fakeProvider{"verbs", 0}).Get("auto"); !errors.Is(err, rdma.ErrNoDevice) {
		t.Errorf("auto without devices: %v", err)
	}
}

func TestVerbError(t *testing.T) {
	err := error(&rdma.VerbError{Verb: "ibv_post_send", Errno: syscall.ENOMEM})
	if err.Error() != "rdma: ibv_post_send: cannot allocate memory" {
		t.Errorf("text %q", err)
	}
	if !errors.Is(err, rdma.ErrQueueFull) || !errors.Is(err, syscall.ENOMEM) || errors.Is(err, rdma.ErrBusy) {
		t.Error("errors.Is mapping")
	}
	if !errors.Is(&rdma.VerbError{Verb: "ibv_alloc_mw", Errno: syscall.EOPNOTSUPP}, rdma.ErrNotSupported) {
		t.Error("EOPNOTSUPP is not ErrNotSupported")
	}
	if rdma.StatusRemAccessErr.String() != "remote access error" || rdma.StatusWRFlushErr.String() != "work request flushed error" {
		t.Error("status strings differ from ibv_wc_status_str")
	}
}
