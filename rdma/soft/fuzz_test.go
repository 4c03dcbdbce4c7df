package soft

// Fuzz targets: a hostile peer feeds the MPA, DDP and RDMAP parsers.
// The rule under test: no input panics, hangs, or writes outside a
// registered region with the right rights; a protocol violation ends in
// a Terminate (or, for a broken stream, a close), and the QP always ends
// in ERROR with its queues flushed.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/quartet-server/quartet/rdma"
)

// fakeConn plays back a byte stream and records what the QP writes.
type fakeConn struct {
	r    io.Reader
	gate chan struct{} // if set, reads wait until it is closed
	mu   sync.Mutex
	out  bytes.Buffer
}

func (c *fakeConn) Read(b []byte) (int, error) {
	if c.gate != nil {
		<-c.gate
	}
	return c.r.Read(b)
}
func (c *fakeConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out.Write(b)
}
func (c *fakeConn) Close() error                     { return nil }
func (c *fakeConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *fakeConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *fakeConn) SetDeadline(time.Time) error      { return nil }
func (c *fakeConn) SetReadDeadline(time.Time) error  { return nil }
func (c *fakeConn) SetWriteDeadline(time.Time) error { return nil }

// Layout of the fuzz QP's memory: one 64 KiB mapping; the MR that
// remote peers may write and read is [fuzzMRoff, fuzzMRoff+fuzzMRlen),
// the receive buffers and the Read sink live in a second, local-only
// MR; the rest is guard that must never change.
const (
	fuzzMem    = 64 << 10
	fuzzMRoff  = 8 << 10
	fuzzMRlen  = 16 << 10
	fuzzLocOff = 32 << 10
	fuzzLocLen = 16 << 10
	fuzzGuard  = 0xA5
)

// fuzzQP runs one QP's receive path over data.
func fuzzQP(t *testing.T, crc, withRead bool, data []byte) {
	mem, err := rdma.Alloc(fuzzMem)
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Free()
	buf := mem.Bytes()
	for i := range buf {
		buf[i] = fuzzGuard
	}
	d := &device{prov: New(Config{}), mem: newMemTable(16)}
	p := &pd{dev: d}
	remote, err := p.Register(buf[fuzzMRoff:fuzzMRoff+fuzzMRlen], rdma.AccessLocalWrite|rdma.AccessRemoteWrite|rdma.AccessRemoteRead)
	if err != nil {
		t.Fatal(err)
	}
	local, err := p.Register(buf[fuzzLocOff:fuzzLocOff+fuzzLocLen], rdma.AccessLocalWrite)
	if err != nil {
		t.Fatal(err)
	}
	c, err := newCQ(d, 64)
	if err != nil {
		t.Fatal(err)
	}
	q, err := newQP(d, rdma.QPConfig{PD: p, SendCQ: c, RecvCQ: c, MaxSendWR: 4, MaxRecvWR: 4, MaxRecvSGE: 2, SignalAll: true})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		sgl := []rdma.SGE{rdma.SGEOf(local, i*4096, 1000), rdma.SGEOf(local, i*4096+2000, 1000)}
		if err := q.PostRecv(uint64(i), sgl); err != nil {
			t.Fatal(err)
		}
	}
	conn := &fakeConn{r: bytes.NewReader(data), gate: make(chan struct{})}
	q.start(conn, crc, 4, 4, 1000, nil)
	if withRead {
		// The Read is on the wire (in the ORQ) before the peer's bytes
		// arrive, so every run of an input behaves the same.
		if err := q.PostRead(9, []rdma.SGE{rdma.SGEOf(local, 8192, 4096)}, 0x1000, 0x1234, 0); err != nil {
			t.Fatal(err)
		}
		for {
			q.mu.Lock()
			n := len(q.orq)
			q.mu.Unlock()
			if n == 1 {
				break
			}
			time.Sleep(10 * time.Microsecond)
		}
	}
	close(conn.gate)
	// The stream ends, so rx always ends: by a Terminate or by EOF.
	select {
	case <-q.txDone:
	case <-time.After(10 * time.Second):
		t.Fatal("QP did not end after its input did")
	}
	if q.State() != rdma.QPStateError || q.Err() == nil {
		t.Fatalf("QP state %s, err %v", q.State(), q.Err())
	}
	var te *TermError
	if errors.As(q.Err(), &te) && te.Sent {
		if !lastIsTerminate(conn.out.Bytes()) {
			t.Fatalf("QP failed with %v but sent no Terminate", te)
		}
	}
	q.Close()
	// Guard bytes outside the remotely writable MR and the receive/sink
	// areas never change.
	for i, b := range buf {
		inRemote := i >= fuzzMRoff && i < fuzzMRoff+fuzzMRlen
		inLocal := i >= fuzzLocOff && i < fuzzLocOff+fuzzLocLen
		if !inRemote && !inLocal && b != fuzzGuard {
			t.Fatalf("byte %#x outside every region changed", i)
		}
	}
	// Everything posted completed.
	var wcs [16]rdma.Completion
	n, _ := c.Poll(wcs[:])
	want := 2
	if withRead {
		want = 3
	}
	if n < want {
		t.Fatalf("%d completions, want at least %d: %+v", n, want, wcs[:n])
	}
	remote.Close()
	local.Close()
	c.qps.Store(0)
	c.Close()
}

// lastIsTerminate walks the FPDUs in out and reports whether the last
// one is a Terminate.
func lastIsTerminate(out []byte) bool {
	last := -1
	for len(out) >= 4 {
		ulpdu := int(binary.BigEndian.Uint16(out))
		last = int(binary.BigEndian.Uint16(out[2:]) & rdmapOpMsk)
		n := mpaHdr + ulpdu + padLen(ulpdu) + mpaCRCLen
		if n > len(out) {
			return false
		}
		out = out[n:]
	}
	return last == opTerminate
}

// fpdu frames one DDP segment (header h filled except the MPA length)
// with payload and trailer.
func fpdu(crc bool, h []byte, payload []byte) []byte {
	ulpdu := len(h) - mpaHdr + len(payload)
	b := append([]byte(nil), h...)
	binary.BigEndian.PutUint16(b, uint16(ulpdu))
	b = append(b, payload...)
	b = append(b, make([]byte, padLen(ulpdu))...)
	var c uint32
	if crc {
		c = crc32.Checksum(b, castagnoli)
	}
	return binary.LittleEndian.AppendUint32(b, c)
}

func seedHdr(op int, last bool, f func(b []byte)) []byte {
	b := make([]byte, pktinfos[op].hdrLen)
	binary.BigEndian.PutUint16(b[2:], ctrlWord(op, last))
	if !pktinfos[op].tagged {
		binary.BigEndian.PutUint32(b[8:], pktinfos[op].qn)
		binary.BigEndian.PutUint32(b[12:], 1)
	}
	if f != nil {
		f(b)
	}
	return b
}

// The fuzz QP's remote MR gets STag 1<<8|1 (first slot, first key).
const fuzzSTag = 1<<8 | 1

// rxSeeds are well-formed and subtly broken streams.
func rxSeeds(crc bool) [][]byte {
	be := binary.BigEndian
	// The remote MR's address is not known until run time; tagged seeds
	// use TO 0 and the fuzzer mutates from there (they exercise the
	// bounds check); the in-range write path is covered by the loopback
	// tests.
	send := fpdu(crc, seedHdr(opSend, true, nil), []byte("hello, iwarp"))
	send2a := fpdu(crc, seedHdr(opSend, false, nil), bytes.Repeat([]byte{1}, 900))
	send2b := fpdu(crc, seedHdr(opSend, true, func(b []byte) { be.PutUint32(b[16:], 900) }), bytes.Repeat([]byte{2}, 900))
	write := fpdu(crc, seedHdr(opWrite, true, func(b []byte) { be.PutUint32(b[4:], fuzzSTag) }), []byte("data"))
	rreq := fpdu(crc, seedHdr(opReadReq, true, func(b []byte) {
		be.PutUint32(b[20:], 0x77)
		be.PutUint32(b[32:], 16)
		be.PutUint32(b[36:], fuzzSTag)
	}), nil)
	rresp := fpdu(crc, seedHdr(opReadResp, true, func(b []byte) { be.PutUint32(b[4:], 2<<8|1) }), make([]byte, 64))
	term := fpdu(crc, seedHdr(opTerminate, true, func(b []byte) {
		be.PutUint32(b[20:], termWord(layerRDMAP, rdmapEtypeRemoteProt, rdmapEcodeInvalidSTag, termFlagM|termFlagD|termFlagR))
	}), rreq[:hdrReadReq])
	badver := append([]byte(nil), send...)
	badver[2] ^= 0x03
	return [][]byte{
		send,
		append(send2a, send2b...),
		append(send, send...),
		write,
		rreq,
		rresp,
		term,
		badver,
		send[:7],
		{0xff, 0xff, 0x41, 0x43},
	}
}

func FuzzDDP(f *testing.F) {
	for _, crc := range []bool{false, true} {
		for _, s := range rxSeeds(crc) {
			f.Add(crc, false, s)
		}
	}
	f.Fuzz(func(t *testing.T, crc, withRead bool, data []byte) {
		fuzzQP(t, crc, withRead, data)
	})
}

// FuzzRDMAP is the same harness with a Read outstanding, so Read
// Responses and Terminates that name Reads have something to hit.
func FuzzRDMAP(f *testing.F) {
	for _, crc := range []bool{false, true} {
		for _, s := range rxSeeds(crc) {
			f.Add(crc, true, s)
		}
	}
	f.Fuzz(func(t *testing.T, crc, withRead bool, data []byte) {
		fuzzQP(t, crc, true, data)
	})
}

func mpaSeeds() [][]byte {
	req := appendMPA(nil, mpaRR{rev: 2, enhanced: true, ird: 1, ord: 1, priv: []byte("private")})
	rep := appendMPA(nil, mpaRR{reply: true, rev: 2, bits: mpaFlagCRC, enhanced: true, ird: 1 | mpaV2PeerToPeer, ord: 1 | mpaV2WriteRTR})
	v1 := appendMPA(nil, mpaRR{rev: 1, priv: bytes.Repeat([]byte{7}, 256)})
	rej := appendMPA(nil, mpaRR{reply: true, rev: 2, bits: mpaFlagReject})
	return [][]byte{req, rep, v1, rej, req[:19], append(req, 0)}
}

func FuzzMPA(f *testing.F) {
	for _, s := range mpaSeeds() {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, data []byte, reply bool) {
		rr, err := parseMPA(data, reply)
		if err != nil {
			if !errors.Is(err, errMPA) {
				t.Fatalf("error %v does not wrap errMPA", err)
			}
			return
		}
		if len(rr.priv) > mpaMaxPrivData {
			t.Fatalf("accepted %d bytes of private data", len(rr.priv))
		}
		// What parses re-encodes to a frame that parses the same.
		again, err := parseMPA(appendMPA(nil, rr), reply)
		if err != nil || again.rev != rr.rev || again.enhanced != rr.enhanced || !bytes.Equal(again.priv, rr.priv) ||
			again.ird != rr.ird || again.ord != rr.ord {
			t.Fatalf("round trip: %+v -> %+v, %v", rr, again, err)
		}
		// The stream reader agrees with the frame parser.
		got, err := readMPA(&fakeConn{r: bytes.NewReader(data)}, reply)
		if err == nil && !bytes.Equal(got.priv, rr.priv) {
			t.Fatalf("readMPA disagrees: %+v vs %+v", got, rr)
		}
	})
}

// TestWriteFuzzCorpus regenerates testdata/fuzz from the seeds above
// when QUARTET_WRITE_CORPUS=1; the committed corpus makes `go test` run
// every seed even without -fuzz.
func TestWriteFuzzCorpus(t *testing.T) {
	if os.Getenv("QUARTET_WRITE_CORPUS") != "1" {
		t.Skip("set QUARTET_WRITE_CORPUS=1 to regenerate testdata/fuzz")
	}
	write := func(name string, i int, body string) {
		dir := filepath.Join("testdata", "fuzz", name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%02d", i)), []byte("go test fuzz v1\n"+body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	i := 0
	for _, crc := range []bool{false, true} {
		for _, s := range rxSeeds(crc) {
			write("FuzzDDP", i, fmt.Sprintf("bool(%v)\nbool(false)\n[]byte(%q)\n", crc, s))
			write("FuzzRDMAP", i, fmt.Sprintf("bool(%v)\nbool(true)\n[]byte(%q)\n", crc, s))
			i++
		}
	}
	for j, s := range mpaSeeds() {
		write("FuzzMPA", j, fmt.Sprintf("[]byte(%q)\nbool(%v)\n", s, j%2 == 1))
	}
}
