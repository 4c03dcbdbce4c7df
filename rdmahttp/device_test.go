package rdmahttp

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/quartet-server/quartet/internal/rdmatest"
	"github.com/quartet-server/quartet/rdma"
	"github.com/quartet-server/quartet/rdma/deliver"
)

// onKernelIWARP reports whether fx's server runs on a kernel iWARP device
// (siw, an iWARP NIC), whose timing the software provider's does not share.
func onKernelIWARP(fx *fixture) bool {
	return rdmatest.OnDevice() && fx.mod.DeviceInfo().Transport == rdma.TransportIWARP
}

const envKilledChild = "QUARTET_RDMAHTTP_KILLED_CHILD"

// TestKilledClientProcess: a client process asks for client-reads, gets
// its exposure, and is killed (SIGKILL) before it reads or confirms. The
// server must release the exposure (a window or per-operation MR, and the
// cache's reference) by the exposure timeout at the latest: on iWARP the
// kernel's TCP reset ends the channel at once, on RoCE nothing tells the
// server and only the timeout does.
func TestKilledClientProcess(t *testing.T) {
	if url := os.Getenv(envKilledChild); url != "" {
		killedChild(t, url)
		return
	}
	fx := start(t, Config{ExposureTimeout: 2 * time.Second})
	name := fmt.Sprintf("f%d.bin", 1<<20+3)
	// Warm the file cache and a channel so only the exposure is counted.
	c := newClient(t, ClientConfig{})
	if _, _, err := get(t.Context(), c, fx.url+"/"+name, deliver.ModeClientReads); err != nil {
		t.Fatal(err)
	}
	if !rdmatest.Eventually(5*time.Second, func() bool { return fx.mod.Stats().LiveExposures == 0 }) {
		t.Fatal("warm-up exposure not revoked")
	}
	before := fx.mod.Stats()

	cmd := exec.Command(os.Args[0], "-test.run=^TestKilledClientProcess$", "-test.v")
	cmd.Env = append(os.Environ(), envKilledChild+"="+fx.url+"/"+name)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exposed := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if l := sc.Text(); strings.HasPrefix(l, "exposed ") {
				exposed <- l
			}
		}
		close(exposed)
	}()
	select {
	case l, ok := <-exposed:
		if !ok {
			t.Fatalf("the child exited without an exposure: %v", cmd.Wait())
		}
		t.Logf("child: %s", l)
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		t.Fatal("the child got no exposure in 60 s")
	}
	if st := fx.mod.Stats(); st.LiveExposures != 1 {
		t.Fatalf("no live exposure while the child lives: %+v", st)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	killed := time.Now()
	// The child's channel may have been dialed by the other writer loop:
	// count MRs net of channels (a QP and its message MR each).
	if !rdmatest.Eventually(15*time.Second, func() bool {
		st := fx.mod.Stats()
		return st.LiveExposures == 0 && st.LiveMWs == before.LiveMWs && st.LiveMRs-st.LiveQPs == before.LiveMRs-before.LiveQPs
	}) {
		t.Fatalf("the killed client's exposure is still held: %+v (before %+v)", fx.mod.Stats(), before)
	}
	st := fx.mod.Stats()
	t.Logf("released %v after the kill (timed out: %d, confirmed: %d)", time.Since(killed).Round(time.Millisecond), st.TimedOut-before.TimedOut, st.Confirmed-before.Confirmed)
	// The server still serves others.
	if _, body, err := get(t.Context(), c, fx.url+"/"+name, deliver.ModeClientReads); err != nil || len(body) != 1<<20+3 {
		t.Fatalf("after the kill: %v, %d bytes", err, len(body))
	}
}

// killedChild is the client process of TestKilledClientProcess: it asks
// for an exposure naming its own endpoint, reports it, and waits to die.
func killedChild(t *testing.T, url string) {
	c := newClient(t, ClientConfig{})
	resp, body := rawGet(t, url, map[string]string{HeaderMode: "client-reads",
		HeaderEndpoint: c.Endpoint().String(), HeaderOp: "1"})
	if resp.Header.Get(HeaderRead) == "" || len(body) != 0 {
		t.Fatalf("no exposure: %v", resp.Header)
	}
	fmt.Printf("exposed %s\n", resp.Header.Get(HeaderRead))
	time.Sleep(time.Hour)
}
