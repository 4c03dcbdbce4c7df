//go:build verbs

// Package interop_test checks that the pure-Go software iWARP provider
// (rdma/soft) and the kernel's siw, driven through rdma-core
// (rdma/verbs), understand each other on the wire: each side active in
// turn, CRC off and on, with Send/Receive, RDMA Write and RDMA Read in
// both directions, every byte checked.
//
// It needs siw0, which exists only in the project's VM:
//
//	CGO_ENABLED=1 go test -tags verbs -c -o /tmp/interop.test ./rdma/interop
//	vm/run.sh -r siw -- /tmp/interop.test -test.v
//
// Elsewhere it skips.
package interop_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/quartet-server/quartet/rdma"
	"github.com/quartet-server/quartet/rdma/rdmatool"
	"github.com/quartet-server/quartet/rdma/soft"
	"github.com/quartet-server/quartet/rdma/verbs"
)

const (
	memSize = 52 << 20
	recvs   = 4
	msgSize = 1000
)

// siw finds an iWARP device with an address (siw0 in the VM).
func siw(t *testing.T) (string, netip.Addr) {
	infos, err := verbs.New().Devices()
	if err != nil {
		t.Skipf("no verbs devices: %v", err)
	}
	for _, in := range infos {
		if in.Transport == rdma.TransportIWARP && len(in.Addrs) > 0 {
			return in.Name, in.Addrs[0]
		}
	}
	t.Skip("no iWARP device with an address (siw0 exists in the VM: vm/run.sh -r siw -- interop.test)")
	return "", netip.Addr{}
}

// end is one side: device, PD, CQ, memory, MR and, once connected, QP.
type end struct {
	name string
	dev  rdma.Device
	pd   rdma.PD
	cq   rdma.CQ
	mem  *rdma.Memory
	mr   rdma.MR
	qp   rdma.QP
}

func newEnd(t *testing.T, name string, dev rdma.Device) *end {
	t.Helper()
	e := &end{name: name, dev: dev}
	var err error
	if e.pd, err = dev.AllocPD(); err != nil {
		t.Fatalf("%s AllocPD: %v", name, err)
	}
	if e.cq, err = dev.CreateCQ(256); err != nil {
		t.Fatalf("%s CreateCQ: %v", name, err)
	}
	if e.mem, err = rdma.Alloc(memSize); err != nil {
		t.Fatal(err)
	}
	if e.mr, err = e.pd.Register(e.mem.Bytes(), rdma.AccessLocalWrite|rdma.AccessRemoteWrite|rdma.AccessRemoteRead); err != nil {
		t.Fatalf("%s Register: %v", name, err)
	}
	return e
}

// cfg posts recvs receives in the last recvs*4 KiB of memory before the
// connection is up (iWARP has no RNR retry).
func (e *end) cfg() rdma.QPConfig {
	return rdma.QPConfig{
		PD: e.pd, SendCQ: e.cq, RecvCQ: e.cq, MaxSendWR: 32, MaxRecvWR: 16, SignalAll: true,
		Prepare: func(qp rdma.QP) error {
			for i := 0; i < recvs; i++ {
				if err := qp.PostRecv(uint64(100+i), []rdma.SGE{rdma.SGEOf(e.mr, memSize-(i+1)*4096, 4096)}); err != nil {
					return err
				}
			}
			return nil
		},
	}
}

func (e *end) close(t *testing.T) {
	if e.qp != nil {
		if err := e.qp.Close(); err != nil {
			t.Errorf("%s QP close: %v", e.name, err)
		}
	}
	for _, c := range []struct {
		what string
		f    func() error
	}{{"MR", e.mr.Close}, {"CQ", e.cq.Close}, {"PD", e.pd.Close}, {"device", e.dev.Close}, {"memory", e.mem.Free}} {
		if err := c.f(); err != nil {
			t.Errorf("%s %s close: %v", e.name, c.what, err)
		}
	}
}

func (e *end) wait(t *testing.T, n int) []rdma.Completion {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out []rdma.Completion
	buf := make([]rdma.Completion, 8)
	for len(out) < n {
		k, err := rdma.Wait(ctx, e.cq, buf[:min(len(buf), n-len(out))])
		if err != nil {
			t.Fatalf("%s: waiting for %d completions (have %+v): %v (QP err %v)", e.name, n, out, err, e.qp.Err())
		}
		out = append(out, buf[:k]...)
	}
	for _, wc := range out {
		if wc.Status != rdma.StatusSuccess {
			t.Fatalf("%s: completion %+v (QP err %v)", e.name, wc, e.qp.Err())
		}
	}
	return out
}

func pattern(b []byte, seed int) {
	for i := range b {
		b[i] = byte(i*31 + seed + i>>9)
	}
}

// exchange runs Send/Recv, Write and Read from a to b and back.
func exchange(t *testing.T, a, b *end) {
	// Send both ways.
	for i, pr := range [][2]*end{{a, b}, {b, a}} {
		from, to := pr[0], pr[1]
		pattern(from.mem.Bytes()[:msgSize], 7+i)
		if err := from.qp.PostSend(1, []rdma.SGE{rdma.SGEOf(from.mr, 0, msgSize)}, 0); err != nil {
			t.Fatalf("%s PostSend: %v", from.name, err)
		}
		from.wait(t, 1)
		wc := to.wait(t, 1)[0]
		if wc.Op != rdma.OpRecv || wc.Bytes != msgSize {
			t.Fatalf("%s receive %+v", to.name, wc)
		}
		got := to.mem.Bytes()[memSize-4096 : memSize-4096+msgSize]
		if !bytes.Equal(got, from.mem.Bytes()[:msgSize]) {
			t.Fatalf("%s -> %s: sent bytes differ", from.name, to.name)
		}
	}
	// Writes and Reads both ways: from writes its [0,n) into to's
	// [16 MiB, 16 MiB+n), then reads it back into its own [32 MiB, 32 MiB+n).
	for i, pr := range [][2]*end{{a, b}, {b, a}} {
		from, to := pr[0], pr[1]
		for _, n := range []int{1, 3, 4096, 65537, 1 << 20, 16 << 20} {
			src := from.mem.Bytes()[:n]
			pattern(src, n+i)
			if err := from.qp.PostWrite(2, []rdma.SGE{rdma.SGEOf(from.mr, 0, n)}, to.mr.Addr()+16<<20, to.mr.RKey(), 0); err != nil {
				t.Fatalf("%s PostWrite: %v", from.name, err)
			}
			if err := from.qp.PostRead(3, []rdma.SGE{rdma.SGEOf(from.mr, 32<<20, n)}, to.mr.Addr()+16<<20, to.mr.RKey(), 0); err != nil {
				t.Fatalf("%s PostRead: %v", from.name, err)
			}
			wcs := from.wait(t, 2)
			if wcs[0].Op != rdma.OpWrite || wcs[1].Op != rdma.OpRead {
				t.Fatalf("%s completions %+v", from.name, wcs)
			}
			if !bytes.Equal(to.mem.Bytes()[16<<20:16<<20+n], src) {
				t.Fatalf("%s -> %s: %d written bytes differ", from.name, to.name, n)
			}
			if !bytes.Equal(from.mem.Bytes()[32<<20:32<<20+n], src) {
				t.Fatalf("%s <- %s: %d read bytes differ", from.name, to.name, n)
			}
		}
	}
}

// connect makes a soft and a verbs end on the siw device and connects
// them, soft active or passive.
func connect(t *testing.T, name string, ip netip.Addr, crc, softActive bool) (active, passive *end) {
	t.Helper()
	vdev, err := verbs.New().Open(name)
	if err != nil {
		t.Fatal(err)
	}
	sdev, err := soft.New(soft.Config{CRC: crc}).Open("")
	if err != nil {
		t.Fatal(err)
	}
	v, s := newEnd(t, "verbs/"+name, vdev), newEnd(t, "soft", sdev)
	t.Cleanup(func() { v.close(t); s.close(t) })
	active, passive = s, v
	if !softActive {
		active, passive = v, s
	}
	ln, err := passive.dev.Listen(net.JoinHostPort(ip.String(), "0"), 4)
	if err != nil {
		t.Fatalf("%s Listen: %v", passive.name, err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		req, err := ln.Accept(ctx)
		if err != nil {
			done <- err
			return
		}
		if string(req.PrivateData()) != "hello from "+active.name {
			done <- fmt.Errorf("request private data %q", req.PrivateData())
			req.Reject(nil)
			return
		}
		passive.qp, err = req.Accept(t.Context(), passive.cfg(), []byte("hello from "+passive.name))
		done <- err
	}()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	active.qp, err = active.dev.Dial(ctx, net.JoinHostPort(ip.String(), port), active.cfg(), []byte("hello from "+active.name))
	if err != nil {
		t.Fatalf("%s Dial: %v", active.name, err)
	}
	if err := <-done; err != nil {
		t.Fatalf("%s Accept: %v", passive.name, err)
	}
	if got := string(active.qp.PrivateData()); got != "hello from "+passive.name {
		t.Errorf("reply private data %q", got)
	}
	return active, passive
}

func TestInterop(t *testing.T) {
	name, ip := siw(t)
	for _, crc := range []bool{false, true} {
		for _, softActive := range []bool{true, false} {
			role := "soft-active"
			if !softActive {
				role = "verbs-active"
			}
			t.Run(fmt.Sprintf("%s/crc-%v", role, crc), func(t *testing.T) {
				active, passive := connect(t, name, ip, crc, softActive)
				exchange(t, active, passive)
			})
		}
	}
}

// TestTerminateInterop: a Read with a wrong rkey is refused by the other
// implementation with a Terminate that this one understands, in both
// directions: the soft reader's Read completes with a remote access
// error, siw's with a flush (siw does not blame the Read), and the soft
// QP leaves RTS.
func TestTerminateInterop(t *testing.T) {
	name, ip := siw(t)
	for _, softReads := range []bool{true, false} {
		label := "soft-reads-from-siw"
		if !softReads {
			label = "siw-reads-from-soft"
		}
		t.Run(label, func(t *testing.T) {
			a, b := connect(t, name, ip, false, true) // a is soft
			reader, target := a, b
			if !softReads {
				reader, target = b, a
			}
			if err := reader.qp.PostRead(5, []rdma.SGE{rdma.SGEOf(reader.mr, 0, 100)}, target.mr.Addr(), target.mr.RKey()^0x5a00, 0); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			buf := make([]rdma.Completion, 8)
			n, err := rdma.Wait(ctx, reader.cq, buf)
			if err != nil {
				t.Fatalf("no completion for the bad Read: %v", err)
			}
			wc := buf[0]
			// soft reads siw's Terminate (whose control word siw lays out
			// with little-endian bitfields) and blames the Read; siw moves
			// its QP to ERROR on any Terminate and flushes the Read.
			want := rdma.StatusRemAccessErr
			if !softReads {
				want = rdma.StatusWRFlushErr
			}
			if wc.WRID != 5 || wc.Status != want {
				t.Fatalf("bad Read completed with %+v, want %q", buf[:n], want)
			}
			t.Logf("%s: Read completed with %q", reader.name, wc.Status)
			soft := a.qp
			deadline := time.Now().Add(10 * time.Second)
			for soft.State() == rdma.QPStateRTS && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if soft.State() == rdma.QPStateRTS {
				t.Fatal("soft QP still in RTS after the Terminate")
			}
			t.Logf("soft QP: %v", soft.Err())
		})
	}
}

// TestRping runs Quartet's rping-compatible ping on the soft provider
// against rdma-core's rping on siw0, each as client and as server, with
// the data checked by both (rping -V, and the Quartet side always).
func TestRping(t *testing.T) {
	_, ip := siw(t)
	if _, err := exec.LookPath("rping"); err != nil {
		t.Skip("rping not installed (rdmacm-utils)")
	}
	addr := ip.String()
	for i, softServer := range []bool{false, true} {
		name := "soft-client/rping-server"
		if softServer {
			name = "rping-client/soft-server"
		}
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			port := fmt.Sprint(7300 + i)
			common := []string{"-a", addr, "-p", port, "-C", "5", "-S", "100", "-V"}
			role := map[bool]string{true: "-s", false: "-c"}
			cmd := exec.CommandContext(ctx, "rping", append([]string{role[!softServer]}, common...)...)
			var rpingOut bytes.Buffer
			cmd.Stdout, cmd.Stderr = &rpingOut, &rpingOut
			var quartetOut bytes.Buffer
			runQuartet := func() error {
				return rdmatool.Ping(ctx, "soft", append([]string{role[softServer], "-v"}, common...), &quartetOut, &quartetOut)
			}
			var err, rerr error
			if softServer {
				done := make(chan error, 1)
				go func() { done <- runQuartet() }()
				time.Sleep(500 * time.Millisecond) // let the server listen
				rerr = cmd.Run()
				err = <-done
			} else {
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				// rping needs a moment to listen in the emulated guest.
				for try := 0; ; try++ {
					quartetOut.Reset()
					err = runQuartet()
					if !errors.Is(err, syscall.ECONNREFUSED) || try == 40 {
						break
					}
					time.Sleep(250 * time.Millisecond)
				}
				rerr = cmd.Wait()
			}
			t.Logf("quartet:\n%s\nrping:\n%s", quartetOut.String(), rpingOut.String())
			if err != nil || rerr != nil {
				t.Fatalf("quartet: %v; rping: %v", err, rerr)
			}
			if !strings.Contains(quartetOut.String(), "rdma-ping-4") {
				t.Fatal("quartet did not see 5 pings")
			}
		})
	}
}
