package soft_test

import (
	"bytes"
	"testing"

	"github.com/quartet-server/quartet/rdma"
	"github.com/quartet-server/quartet/rdma/soft"
)

var _ rdma.Provider = (*soft.Provider)(nil)

var crcModes = []struct {
	name string
	cfg  soft.Config
}{
	{"crc-off", soft.Config{}},
	{"crc-on", soft.Config{CRC: true}},
	{"small-fpdu", soft.Config{CRC: true, MaxULPDU: 1000}},
}

func TestSendRecv(t *testing.T) {
	for _, m := range crcModes {
		t.Run(m.name, func(t *testing.T) {
			checkLeaks(t)
			for _, size := range []int{0, 1, 100, 4096, 3000} {
				o := pairOpts{cfg: m.cfg, recvs: 1, recvSize: 4096}
				cli, srv := pair(t, o)
				src := cli.mem.Bytes()[:size]
				fill(src, byte(size))
				if err := cli.qp.PostSend(7, []rdma.SGE{rdma.SGEOf(cli.mr, 0, size)}, rdma.SendSolicited); err != nil {
					t.Fatal(err)
				}
				wc := wait(t, cli.cq, 1)[0]
				if wc.Status != rdma.StatusSuccess || wc.Op != rdma.OpSend || wc.WRID != 7 {
					t.Fatalf("send completion %+v", wc)
				}
				wc = wait(t, srv.cq, 1)[0]
				if wc.Status != rdma.StatusSuccess || wc.Op != rdma.OpRecv || wc.WRID != 1000 || int(wc.Bytes) != size {
					t.Fatalf("recv completion %+v (want %d bytes)", wc, size)
				}
				off := len(srv.mem.Bytes()) - 4096
				if !bytes.Equal(srv.mem.Bytes()[off:off+size], src) {
					t.Fatalf("size %d: received bytes differ", size)
				}
				cli.close(t)
				srv.close(t)
			}
		})
	}
}

// TestSendScatter sends a message gathered from 3 SGEs into a receive
// scattered over 2, across FPDU boundaries.
func TestSendScatter(t *testing.T) {
	checkLeaks(t)
	o := pairOpts{cfg: soft.Config{CRC: true, MaxULPDU: 512}}
	cli, srv := pair(t, o)
	defer cli.close(t)
	defer srv.close(t)
	fill(cli.mem.Bytes()[:10000], 3)
	recv := []rdma.SGE{rdma.SGEOf(srv.mr, 100, 1234), rdma.SGEOf(srv.mr, 50000, 8000)}
	if err := srv.qp.PostRecv(1, recv); err != nil {
		t.Fatal(err)
	}
	send := []rdma.SGE{rdma.SGEOf(cli.mr, 0, 1000), rdma.SGEOf(cli.mr, 5000, 3000), rdma.SGEOf(cli.mr, 9000, 1000)}
	if err := cli.qp.PostSend(2, send, 0); err != nil {
		t.Fatal(err)
	}
	wait(t, cli.cq, 1)
	wc := wait(t, srv.cq, 1)[0]
	if wc.Status != rdma.StatusSuccess || wc.Bytes != 5000 {
		t.Fatalf("recv %+v", wc)
	}
	var want []byte
	c := cli.mem.Bytes()
	want = append(want, c[0:1000]...)
	want = append(want, c[5000:8000]...)
	want = append(want, c[9000:10000]...)
	s := srv.mem.Bytes()
	got := append(append([]byte(nil), s[100:1334]...), s[50000:50000+5000-1234]...)
	if !bytes.Equal(got, want) {
		t.Fatal("scattered bytes differ")
	}
}

// TestWriteRead moves 1 B .. 64 MiB both ways and checks every byte.
func TestWriteRead(t *testing.T) {
	sizes := []int{1, 2, 3, 4, 5, 4095, 65536, 65537, 1 << 20, 3<<20 + 7, 64 << 20}
	if testing.Short() {
		sizes = sizes[:len(sizes)-1]
	}
	for _, m := range crcModes[:2] {
		t.Run(m.name, func(t *testing.T) {
			checkLeaks(t)
			// Client memory: [0, max) source/sink; server: same.
			o := pairOpts{cfg: m.cfg, memSize: 2 * (64 << 20)}
			if testing.Short() {
				o.memSize = 8 << 20
			}
			cli, srv := pair(t, o)
			defer cli.close(t)
			defer srv.close(t)
			half := o.memSize / 2
			for _, size := range sizes {
				// Write client[0:size] -> server[half : half+size].
				src := cli.mem.Bytes()[:size]
				fill(src, byte(size)+1)
				if err := cli.qp.PostWrite(1, []rdma.SGE{rdma.SGEOf(cli.mr, 0, size)}, srv.mr.Addr()+uint64(half), srv.mr.RKey(), 0); err != nil {
					t.Fatal(err)
				}
				// Read it back: server[half:half+size] -> client[half:half+size].
				// The Read is ordered after the Write on the wire, so it
				// sees the written bytes.
				if err := cli.qp.PostRead(2, []rdma.SGE{rdma.SGEOf(cli.mr, half, size)}, srv.mr.Addr()+uint64(half), srv.mr.RKey(), 0); err != nil {
					t.Fatal(err)
				}
				wcs := wait(t, cli.cq, 2)
				if wcs[0].WRID != 1 || wcs[0].Op != rdma.OpWrite || wcs[0].Status != rdma.StatusSuccess ||
					wcs[1].WRID != 2 || wcs[1].Op != rdma.OpRead || wcs[1].Status != rdma.StatusSuccess || int(wcs[1].Bytes) != size {
					t.Fatalf("size %d: completions %+v", size, wcs)
				}
				if !bytes.Equal(srv.mem.Bytes()[half:half+size], src) {
					t.Fatalf("size %d: written bytes differ", size)
				}
				if !bytes.Equal(cli.mem.Bytes()[half:half+size], src) {
					t.Fatalf("size %d: read bytes differ", size)
				}
			}
		})
	}
}
