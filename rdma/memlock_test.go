package rdma

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// The drivers' check: what is pinned and what is asked must fit.
func TestOverMemlock(t *testing.T) {
	const mib = 1 << 20
	for _, tt := range []struct {
		asked, pinned, limit uint64
		want                 bool
	}{
		{mib, 0, 8 * mib, false},
		{8 * mib, 0, 8 * mib, false}, // exactly the limit
		{8*mib + 4096, 0, 8 * mib, true},
		{mib, 7*mib + 4096, 8 * mib, true},
		{64 * mib, 0, unix.RLIM_INFINITY, false},
	} {
		if got := overMemlock(tt.asked, tt.pinned, tt.limit); got != tt.want {
			t.Errorf("overMemlock(%d, %d, %d) = %v, want %v", tt.asked, tt.pinned, tt.limit, got, tt.want)
		}
	}
}

func TestPinnedAndCapability(t *testing.T) {
	status := func(pin, capEff string) string {
		return "Name:\tquartet\nVmLck:\t       0 kB\nVmPin:\t" + pin + "\nVmHWM:\t   10000 kB\nCapInh:\t0000000000000000\nCapEff:\t" + capEff + "\n"
	}
	for _, tt := range []struct {
		status      string
		pinned      uint64
		ipcLock, ok bool
	}{
		{status("    2048 kB", "0000000000000000"), 2 << 20, false, true},
		{status("       0 kB", "000001ffffffffff"), 0, true, true}, // root
		{status("       0 kB", "0000000000004000"), 0, true, true}, // CAP_IPC_LOCK alone
		{status("       0 kB", "0000000000003fff"), 0, false, true},
		{"Name:\tquartet\nCapEff:\t0000000000000000\n", 0, false, false}, // no VmPin: an old kernel
		{status("lots", "0000000000000000"), 0, false, false},
	} {
		pinned, ipcLock, ok := pinnedAndCapability(strings.NewReader(tt.status))
		if pinned != tt.pinned || ipcLock != tt.ipcLock || ok != tt.ok {
			t.Errorf("%q: %d %v %v, want %d %v %v", tt.status, pinned, ipcLock, ok, tt.pinned, tt.ipcLock, tt.ok)
		}
	}
}

// Other errors than ENOMEM, and ENOMEM the limit does not explain, come
// back as they were.
func TestMemlockExplainsOnlyTheLimit(t *testing.T) {
	eio := &VerbError{Verb: "ibv_reg_mr", Errno: syscall.EIO}
	if got := MemlockExplains(eio, 1<<20); got != error(eio) {
		t.Errorf("EIO became %v", got)
	}
	enomem := &VerbError{Verb: "ibv_reg_mr", Errno: syscall.ENOMEM}
	if got := MemlockExplains(enomem, 4096); errors.Is(got, ErrMemlock) {
		// 4 KiB cannot pass any limit the test runs under, unless it
		// has pinned nearly all of it.
		t.Errorf("a page's registration explained by the limit: %v", got)
	}
	e := &MemlockError{Err: enomem, Asked: 2 << 20, Pinned: 0, Limit: 8 << 20}
	if !errors.Is(e, ErrMemlock) || !errors.Is(e, syscall.ENOMEM) {
		t.Errorf("%v: want both ErrMemlock and ENOMEM", e)
	}
	if want := "rdma: ibv_reg_mr: cannot allocate memory: 2097152 bytes to pin"; !strings.HasPrefix(fmt.Sprint(e), want) || !strings.Contains(fmt.Sprint(e), "or grant CAP_IPC_LOCK") {
		t.Errorf("%q, want it to start %q and name the capability", e, want)
	}
	e.CapIPCLock = true
	if !strings.Contains(fmt.Sprint(e), "this process has CAP_IPC_LOCK, which this device's driver does not honour") {
		t.Errorf("%q: with the capability, want it to say the capability did not help", e)
	}
}
