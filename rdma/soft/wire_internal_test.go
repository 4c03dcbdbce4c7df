package soft

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/quartet-server/quartet/rdma"
)

// TestCRCMismatch: with CRC negotiated, one flipped payload bit is a
// Terminate (LLP, received CRC error), not a completion.
func TestCRCMismatch(t *testing.T) {
	good := fpdu(true, seedHdr(opSend, true, nil), []byte("payload with a checksum"))
	bad := append([]byte(nil), good...)
	bad[hdrUntagged+3] ^= 0x10
	for _, c := range []struct {
		name string
		in   []byte
		term bool
	}{{"intact", good, false}, {"flipped", bad, true}} {
		t.Run(c.name, func(t *testing.T) {
			q, conn, done := rawQP(t, true, c.in)
			defer done()
			var te *TermError
			got := errors.As(q.Err(), &te) && te.Sent && te.Layer == layerLLP && te.Code == llpEcodeCRC
			if got != c.term {
				t.Fatalf("QP error %v (CRC Terminate expected: %v)", q.Err(), c.term)
			}
			if c.term && !lastIsTerminate(conn.out.Bytes()) {
				t.Fatal("no Terminate on the wire")
			}
		})
	}
}

// rawQP runs a QP over a played-back stream until the stream ends and
// returns it stopped (state ERROR). done releases everything.
func rawQP(t *testing.T, crc bool, in []byte) (*qp, *fakeConn, func()) {
	t.Helper()
	mem, err := rdma.Alloc(1 << 16)
	if err != nil {
		t.Fatal(err)
	}
	d := &device{prov: New(Config{}), mem: newMemTable(16)}
	p := &pd{dev: d}
	mr, err := p.Register(mem.Bytes(), rdma.AccessLocalWrite)
	if err != nil {
		t.Fatal(err)
	}
	c, err := newCQ(d, 16)
	if err != nil {
		t.Fatal(err)
	}
	q, err := newQP(d, rdma.QPConfig{PD: p, SendCQ: c, RecvCQ: c, MaxSendWR: 4, MaxRecvWR: 4})
	if err != nil {
		t.Fatal(err)
	}
	if err := q.PostRecv(1, []rdma.SGE{rdma.SGEOf(mr, 0, 4096)}); err != nil {
		t.Fatal(err)
	}
	conn := &fakeConn{r: bytes.NewReader(in)}
	q.start(conn, crc, 1, 1, 1000, nil)
	<-q.txDone
	return q, conn, func() {
		q.Close()
		mr.Close()
		c.Close()
		mem.Free()
	}
}

// TestMPAResponder checks our MPA reply to the requests other iWARP
// peers send: revision 1 (no IRD/ORD), revision 2 with CRC, and
// revision 2 asking for peer-to-peer mode with an RTR Write.
func TestMPAResponder(t *testing.T) {
	for _, c := range []struct {
		name    string
		req     mpaRR
		wantRev uint8
		wantCRC bool
		wantP2P bool
	}{
		{"rev1", mpaRR{rev: 1}, 1, false, false},
		{"rev2-crc", mpaRR{rev: 2, enhanced: true, bits: mpaFlagCRC, ird: 4, ord: 2}, 2, true, false},
		{"rev2-p2p-write-rtr", mpaRR{rev: 2, enhanced: true, ird: 4 | mpaV2PeerToPeer, ord: 2 | mpaV2WriteRTR}, 2, false, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := &device{prov: New(Config{MPATimeout: 5 * time.Second}), mem: newMemTable(16)}
			p := &pd{dev: d}
			cq, _ := newCQ(d, 16)
			defer cq.Close()
			l, err := d.Listen("127.0.0.1:0", 1)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			raw, err := net.Dial("tcp", l.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer raw.Close()
			c.req.priv = []byte("hi")
			raw.Write(appendMPA(nil, c.req))
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			req, err := l.Accept(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if string(req.PrivateData()) != "hi" {
				t.Fatalf("private data %q", req.PrivateData())
			}
			qp, err := req.Accept(t.Context(), rdma.QPConfig{PD: p, SendCQ: cq, RecvCQ: cq, MaxSendWR: 4, MaxRecvWR: 4}, []byte("yo"))
			if err != nil {
				t.Fatal(err)
			}
			defer qp.Close()
			raw.SetReadDeadline(time.Now().Add(5 * time.Second))
			rep, err := readMPA(raw, true)
			if err != nil {
				t.Fatal(err)
			}
			if rep.rev != c.wantRev || (rep.bits&mpaFlagCRC != 0) != c.wantCRC || string(rep.priv) != "yo" {
				t.Fatalf("reply %+v", rep)
			}
			if c.req.enhanced {
				if !rep.enhanced || int(rep.ird&mpaV2IRDORDMask) < int(c.req.ord&mpaV2IRDORDMask) || int(rep.ord&mpaV2IRDORDMask) > int(c.req.ird&mpaV2IRDORDMask) {
					t.Fatalf("IRD/ORD %#x/%#x do not fit request %#x/%#x", rep.ird, rep.ord, c.req.ird, c.req.ord)
				}
				if p2p := rep.ird&mpaV2PeerToPeer != 0 && rep.ord&mpaV2WriteRTR != 0; p2p != c.wantP2P {
					t.Fatalf("peer-to-peer reply %#x/%#x", rep.ird, rep.ord)
				}
			}
			if c.wantP2P {
				// The RTR frame, a zero-length Write with STag 0, is accepted.
				raw.Write(fpdu(rep.bits&mpaFlagCRC != 0, seedHdr(opWrite, true, nil), nil))
			}
			// A zero-length Read Request is answered by a zero-length
			// Read Response carrying our sink STag back.
			raw.Write(fpdu(rep.bits&mpaFlagCRC != 0, seedHdr(opReadReq, true, func(b []byte) {
				binary.BigEndian.PutUint32(b[20:], 0xabcd)
			}), nil))
			resp := make([]byte, hdrTagged+mpaCRCLen) // ULPDU 14: no pad
			if _, err := io.ReadFull(raw, resp); err != nil {
				t.Fatal(err)
			}
			if op := int(binary.BigEndian.Uint16(resp[2:]) & rdmapOpMsk); op != opReadResp || binary.BigEndian.Uint32(resp[4:]) != 0xabcd {
				t.Fatalf("response %x", resp)
			}
			if qp.State() != rdma.QPStateRTS {
				t.Fatalf("QP %v: %v", qp.State(), qp.Err())
			}
			qp.Close()
			p.Close()
		})
	}
}

// TestCloseUnderStalledPeer: a peer asks for a large region by RDMA Read
// and stops reading its socket, so our transmit blocks in the middle of
// the region. Closing the MR must still return promptly (failing the
// QP that held it), not wait for the peer.
func TestCloseUnderStalledPeer(t *testing.T) {
	const size = 32 << 20
	d := &device{prov: New(Config{MPATimeout: 5 * time.Second}), mem: newMemTable(16), qps: map[*qp]struct{}{}}
	p := &pd{dev: d}
	cq, _ := newCQ(d, 16)
	defer cq.Close()
	mem, err := rdma.Alloc(size)
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Free()
	m, err := p.Register(mem.Bytes(), rdma.AccessRemoteRead)
	if err != nil {
		t.Fatal(err)
	}
	l, err := d.Listen("127.0.0.1:0", 1)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	raw, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	raw.(*net.TCPConn).SetReadBuffer(4096)
	raw.Write(appendMPA(nil, mpaRR{rev: 2, enhanced: true, ird: 1, ord: 1}))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := l.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	qp, err := req.Accept(t.Context(), rdma.QPConfig{PD: p, SendCQ: cq, RecvCQ: cq, MaxSendWR: 4, MaxRecvWR: 4}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer qp.Close()
	if _, err := readMPA(raw, true); err != nil {
		t.Fatal(err)
	}
	raw.Write(fpdu(false, seedHdr(opReadReq, true, func(b []byte) {
		binary.BigEndian.PutUint32(b[20:], 0x77)
		binary.BigEndian.PutUint32(b[32:], size)
		binary.BigEndian.PutUint32(b[36:], m.RKey())
		binary.BigEndian.PutUint64(b[40:], m.Addr())
	}), nil))
	// Let the response fill the socket buffers; we read none of it.
	time.Sleep(200 * time.Millisecond)
	start := time.Now()
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Fatalf("MR.Close took %v under a stalled peer", el)
	}
	if !errors.Is(qp.Err(), rdma.ErrClosed) {
		t.Fatalf("QP error %v, want the region-closed failure", qp.Err())
	}
}
